"""Inspecting one read prompt: what the memory retrieves, what it changes, and where attention goes.

:func:`inspect_prompt` reads one prompt against a memory in one retrieval mode and measures, with
the vector the memory would inject (alpha-scaled, at its inject site): the top-k entries and the
decision, the top next tokens and greedy continuations with and without it, the change in
log-probability of each next token when it is added at each position, and the attention patterns.
:mod:`analyses.inspect.run` builds the memory and runs ``fmi inspect``;
:mod:`analyses.inspect.figures`
writes the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.inspect.figures import LocalHTML, standalone, view_body, write_inspection
from fmi.core.forward import NO_LOGITS, collect
from fmi.core.generate import greedy
from fmi.core.hooks import HookFn, add_at_positions
from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN, check_site, resid
from fmi.errors import ConfigError
from fmi.experiments.labels import check_labels
from fmi.experiments.queries import mentioned
from fmi.experiments.tasks import Binding, Split, Task, Templates
from fmi.memory.relation import reads_relation, scored
from fmi.memory.retrieve import check_modes, decide, mode_scores
from fmi.memory.store import FastMemory
from fmi.memory.values import unembedding

if TYPE_CHECKING:
    from fmi.models.registry import LoadedModel

__all__ = [
    "Candidate",
    "Inspection",
    "Retrieval",
    "TopToken",
    "inspect_prompt",
    "per_position_logits",
    "write_inspection",
]

TOP_TOKENS = 10


@dataclass(frozen=True)
class Candidate:
    """One stored entry and how the prompt scored against it."""

    entry: int
    context: str
    symbol: str
    label: str
    score: float  # the mode's score (what it ranks and thresholds)
    symbol_sim: float  # dual-key channels: token MaxSim of symbol / context key tokens
    context_sim: float


@dataclass(frozen=True)
class Retrieval:
    """The top-k entries under ``mode`` and the decision: ``chosen`` -1 means it abstained."""

    mode: str
    candidates: tuple[Candidate, ...]
    chosen: int
    score: float
    threshold: float
    top: int  # the best-scoring entry, whether or not it passed the threshold
    gate: str | None  # the stored context the prompt names (context_gate's oracle)
    forced: bool  # below threshold, but the top entry's value was injected on request

    @property
    def fired(self) -> bool:
        return self.chosen >= 0

    @property
    def injected(self) -> bool:
        return self.fired or self.forced


@dataclass(frozen=True)
class TopToken:
    id: int
    text: str
    prob: float


@dataclass(frozen=True)
class Inspection:
    """The numbers of one inspection; the circuitsvis views are built from them on request."""

    model_name: str
    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    target: int  # the token the answer position is scored on
    target_text: str
    memory_size: int
    retrieval: Retrieval
    inject_site: str
    alpha: float
    vector: Float[Tensor, " d"]  # what was added (alpha-scaled; zeros when nothing was injected)
    injected_norm: float
    answer_norm: float  # |h| at the inject site, answer position, without memory
    patterns: Float[Tensor, "layer head q k"]
    delta_logprob: Float[Tensor, " pos"]  # position p: next token p+1 (last: the target)
    target_prob_before: float
    target_prob_after: float
    top_before: tuple[TopToken, ...]
    top_after: tuple[TopToken, ...]
    greedy_before: str
    greedy_after: str

    def attention_layer(self, layer: int) -> LocalHTML:
        """circuitsvis ``attention_patterns`` of every head of ``layer``."""
        from circuitsvis.attention import attention_patterns

        view = attention_patterns(tokens=list(self.tokens), attention=self.patterns[layer])
        return LocalHTML(view.local_src)

    @property
    def attention(self) -> LocalHTML:
        """Every layer's attention patterns, one block per layer (displays in Jupyter)."""
        parts = [
            f"<h4>layer {i}</h4>" + view_body(self.attention_layer(i))
            for i in range(self.patterns.shape[0])
        ]
        return standalone(parts)

    def delta_view(self) -> LocalHTML:
        """circuitsvis ``colored_tokens`` of :attr:`delta_logprob`."""
        from circuitsvis.tokens import colored_tokens

        bound = max(float(self.delta_logprob.abs().max()), 1e-6)
        view = colored_tokens(
            list(self.tokens), self.delta_logprob.tolist(), min_value=-bound, max_value=bound
        )
        return LocalHTML(view.local_src)

    @property
    def delta_tokens(self) -> LocalHTML:
        """Tokens coloured by Δ log P(next token) with vs without the memory's vector there."""
        return self.delta_view()

    def summary(self) -> str:
        """One line: the decision, the target's probability before and after, the answers."""
        r = self.retrieval
        names = {c.entry: f"({c.context}, {c.symbol} -> {c.label})" for c in r.candidates}
        if r.fired:
            what = f"retrieved {names.get(r.chosen, f'entry {r.chosen}')}"
        elif r.top >= 0:
            top = names.get(r.top, f"entry {r.top}")
            what = f"forced {top}" if r.forced else f"abstained (top {top})"
        else:
            what = "abstained"
        return (
            f"{r.mode} {what}, score {r.score:.3f} vs threshold {r.threshold:.3f}; "
            f"P({self.target_text!r}) {self.target_prob_before:.3g} -> "
            f"{self.target_prob_after:.3g}; greedy {self.greedy_before!r} -> "
            f"{self.greedy_after!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The numbers, JSON-ready (attention patterns left out: they are on the page)."""
        r = self.retrieval
        return {
            "model": self.model_name,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": list(self.token_ids),
            "target": {"id": self.target, "text": self.target_text},
            "retrieval": {
                "mode": r.mode,
                "chosen": r.chosen,
                "score": r.score,
                "threshold": r.threshold,
                "fired": r.fired,
                "forced": r.forced,
                "gate": r.gate,
                "candidates": [vars(c) for c in r.candidates],
            },
            "inject_site": self.inject_site,
            "alpha": self.alpha,
            "injected_norm": self.injected_norm,
            "answer_norm": self.answer_norm,
            "delta_logprob": [round(float(x), 6) for x in self.delta_logprob],
            "target_prob": {"before": self.target_prob_before, "after": self.target_prob_after},
            "top_before": [vars(t) for t in self.top_before],
            "top_after": [vars(t) for t in self.top_after],
            "greedy": {"before": self.greedy_before, "after": self.greedy_after},
        }


# --------------------------------------------------------------------------- the maths


def position_independent(site: str, n_layers: int) -> bool:
    """Whether a vector added at ``site`` changes only its own position's logits: true for sites
    after the last attention layer (the final norm works per position)."""
    return site.startswith("ln_final.") or site == resid(n_layers - 1, "post")


def _add_everywhere(vector: Tensor) -> HookFn:
    def hook(act: Tensor, hook: object) -> Tensor:
        return act + vector.to(act.dtype).to(act.device)

    return hook


@torch.inference_mode()
def per_position_logits(
    bridge, tokens: Int[Tensor, "1 pos"], site: str, vector: Float[Tensor, " d"]
) -> Float[Tensor, "pos vocab"]:
    """Row ``p``: the logits at position ``p`` when ``vector`` is added at ``site``, position ``p``
    only (no other position changed).

    At a site after all attention (``ln_final.hook_out``, where the memory injects) position
    ``p``'s logits depend only on position ``p``'s activation there, so adding ``vector`` at every
    position in ONE forward gives each position's own effect. Elsewhere later positions would see
    earlier additions through attention, so each position gets its own row of a batch, and the
    logits at the row's position are read from ``ln_final.hook_out`` (``logits = h @ W_U + b_U``)
    instead of keeping ``pos x pos x vocab`` logits.
    """
    n = tokens.shape[1]
    if position_independent(site, int(bridge.cfg.n_layers)):
        with bridge.hooks(fwd_hooks=[(site, _add_everywhere(vector))]):
            return bridge(tokens)[0].float()
    batch = tokens.expand(n, n)
    hook = add_at_positions(vector.expand(n, -1), torch.arange(n))
    with bridge.hooks(fwd_hooks=[(site, hook)]):
        _, cache = bridge.run_with_cache(
            batch, names_filter=lambda name: name == UNEMBED_IN, logits_to_keep=NO_LOGITS
        )
    h = cache[UNEMBED_IN][torch.arange(n), torch.arange(n)].float()
    w_u, b_u = unembedding(bridge)
    return h @ w_u + b_u


def _top(tokenizer, probs: Tensor, k: int) -> tuple[TopToken, ...]:
    p, ids = probs.topk(k)
    return tuple(
        TopToken(int(i), tokenizer.decode([int(i)]), float(q))
        for i, q in zip(ids.tolist(), p.tolist(), strict=True)
    )


# --------------------------------------------------------------------------- retrieval


def _retrieve(
    model, memory: FastMemory, prompt: str, mode: str, top_k: int, force: bool
) -> tuple[Retrieval, Tensor]:
    """Score ``prompt`` exactly as evaluation does; returns the decision, the vector to inject
    (alpha-scaled; zeros when it abstains, unless ``force``)."""
    enc = memory.encoder
    relation = [UNEMBED_IN] if reads_relation(memory) else []
    sites = list(dict.fromkeys([enc.symbol_site, enc.token_site, *relation]))
    scores = scored(memory, collect(model.bridge, model.tokenizer, [prompt], sites))
    gate = [mentioned(prompt, list(dict.fromkeys(e.context for e in memory.entries)))]
    ranked = mode_scores(mode, scores, memory, gate)[0]
    best = decide(mode, scores, memory, gate=gate, threshold=float("-inf"))  # never abstains
    top = int(best.entry[0]) if bool(ranked.isfinite().any()) else -1
    order = [i for i in ranked.argsort(descending=True).tolist() if ranked[i].isfinite()]
    order = ([top] if top >= 0 else []) + [i for i in order if i != top]
    candidates = tuple(
        Candidate(
            i,
            memory.entries[i].context,
            memory.entries[i].symbol,
            memory.entries[i].label,
            float(ranked[i]),
            float(scores.channel("symbol")[0, i]),
            float(scores.channel("context")[0, i]),
        )
        for i in order[:top_k]
    )
    decision = decide(mode, scores, memory, gate=gate)
    chosen = int(decision.entry[0])
    vector = decision.vectors[0]
    forced = force and chosen < 0 and top >= 0
    if forced:
        vector = best.vectors[0]
    retrieval = Retrieval(
        mode,
        candidates,
        chosen,
        float(decision.score[0]),
        float(memory.thresholds.get(mode, float("-inf"))),
        top,
        gate[0],
        forced,
    )
    return retrieval, vector


def label_target(tokenizer, templates: Templates, label: str) -> int:
    """The one token of ``label`` after the read prompt; ``LabelError`` (as ``check_labels``
    words it) when it is not one token."""
    one = Split("inspect", (Binding("inspect", "inspect", label),), templates, ())
    check_labels(Task("inspect", one, (), 0), tokenizer)
    return int(tokenizer(templates.target("read", label), add_special_tokens=False)["input_ids"][0])


def _retrieved_target(memory: FastMemory, retrieval, mode: str) -> int:
    """The label token scored when none is given: the retrieved entry's, or the top entry's
    when the mode abstains; ``ConfigError`` when the mode ranks no entry at all."""
    if retrieval.top < 0:
        raise ConfigError(
            f"mode {mode} ranks no entry for this prompt (no stored context named?), so there "
            "is no label to score: give a target label"
        )
    return memory.entries[retrieval.chosen if retrieval.fired else retrieval.top].target


def _clean_run(bridge, tokens: Tensor, site: str) -> tuple[Tensor, Tensor, float]:
    """One clean forward over ``tokens``: its logits, every layer's attention patterns
    ``[layer, head, query, key]`` and the residual norm at ``site``'s last position."""
    n_layers = int(bridge.cfg.n_layers)
    wanted = {f"blocks.{i}.attn.hook_pattern" for i in range(n_layers)} | {site}
    logits, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    patterns = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"][0] for i in range(n_layers)])
    if patterns.ndim != 4 or patterns.shape[-1] != tokens.shape[1]:
        raise ConfigError(f"unexpected attention pattern shape {tuple(patterns.shape)}")
    return logits, patterns, float(cache[site][0, -1].float().norm())


@torch.inference_mode()
def inspect_prompt(
    model: LoadedModel,
    memory: FastMemory,
    prompt: str,
    *,
    target_label: str | None = None,
    mode: str = "dual_key",
    top_k: int = 5,
    max_new_tokens: int = 6,
    force: bool = False,
    templates: Templates | None = None,
) -> Inspection:
    """Inspect ``prompt`` read against ``memory`` in ``mode``.

    The answer position is scored on ``target_label`` (default: the retrieved entry's label, or
    the top entry's when the mode abstains). ``force`` injects the top entry's value even when
    the mode abstains (the page says so).
    """
    check_modes([mode])
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if len(memory) == 0:
        raise ConfigError("the memory is empty: nothing to inspect")
    bridge, tok = model.bridge, model.tokenizer
    site = check_site(bridge, memory.inject_site)
    retrieval, vector = _retrieve(model, memory, prompt, mode, top_k, force)
    if target_label is not None:
        target = label_target(tok, templates or Templates(), target_label)
    else:
        target = _retrieved_target(memory, retrieval, mode)
    tokens = encode(tok, [prompt]).tokens
    ids = tokens[0].tolist()
    logits, patterns, answer_norm = _clean_run(bridge, tokens, site)
    before = torch.log_softmax(logits[0].float(), dim=-1)
    after = torch.log_softmax(per_position_logits(bridge, tokens, site, vector), dim=-1)
    nxt = torch.tensor([*ids[1:], target])
    rows = torch.arange(len(ids))
    delta = after[rows, nxt] - before[rows, nxt]
    gen_plain = greedy(model, [prompt], site=site, max_new_tokens=max_new_tokens)
    gen_memory = greedy(
        model, [prompt], site=site, deltas=vector[None], max_new_tokens=max_new_tokens
    )
    return Inspection(
        model_name=model.name,
        prompt=prompt,
        token_ids=tuple(ids),
        tokens=tuple(tok.decode([i]) for i in ids),
        target=target,
        target_text=tok.decode([target]),
        memory_size=len(memory),
        retrieval=retrieval,
        inject_site=site,
        alpha=float(memory.alpha),
        vector=vector.float().cpu(),
        injected_norm=float(vector.norm()),
        answer_norm=answer_norm,
        patterns=patterns.float().cpu(),
        delta_logprob=delta.cpu(),
        target_prob_before=float(before[-1, target].exp()),
        target_prob_after=float(after[-1, target].exp()),
        top_before=_top(tok, before[-1].exp(), TOP_TOKENS),
        top_after=_top(tok, after[-1].exp(), TOP_TOKENS),
        greedy_before=tok.decode(list(gen_plain.tokens[0])),
        greedy_after=tok.decode(list(gen_memory.tokens[0])),
    )
