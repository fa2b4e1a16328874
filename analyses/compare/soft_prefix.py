"""GradMem as its paper describes it: a soft prefix of ``K`` memory tokens written by gradient.

GradMem compresses a context into a few *memory tokens*: ``K`` input embeddings, prepended to
the model's input, optimised by a handful of gradient steps so that the model, reading only the
memory, reproduces what the context says. Here the context is a split's write statements, all of
them at once: the prefix ``P`` (``[K, d_model]``) starts from a seeded draw at the scale of real
token embeddings and takes Adam steps on the mean cross-entropy of every statement's label token
at its answer position (``write_prompt`` and the entries' targets, as
:mod:`analyses.compare.gradmem`
uses), with ``P`` prepended to each statement. The memory is then read with no retrieval: the
same ``P`` is prepended to every evaluation query (write, read, plain and unrelated prompts
alike: it is always on) and greedy decoding runs as in every other row.

Frozen: every model parameter. Gradients flow through the whole network into ``P`` alone
(:func:`torch.autograd.grad` with ``P`` as the only input; tests check the weights stay
bit-identical and no parameter gets a ``.grad``). Nothing else is learned.

Prepending. Texts are tokenized and left-padded by :func:`fmi.core.prompts.encode` through
:class:`PrefixTokenizer`, which inserts ``K`` placeholder ids (the pad id) right before each
text's first real token: after a ``<bos>`` the tokenizer prepends (Gemma-3), at the start
otherwise (Pythia, SmolLM2). The attention mask covers them, so positions and attention see
``K`` ordinary tokens. :func:`prefix_hook`, at ``hook_embed`` (the embedding's output; on
Gemma-3 after its ``sqrt(d_model)`` scale, measured in the tests), overwrites those ``K``
positions of every row by ``P`` on the prompt pass, and leaves KV-cached steps alone. ``P`` is
initialised and stepped at that site's scale: ``mean + init * std * N(0, 1)`` with the
per-coordinate mean and std of the real (non-special) tokens' embeddings at the site, and the
Adam learning rate is ``lr`` times their RMS coordinate, so ``lr`` is scale-free.

Budget (:func:`tune`): the learning rate (per ``K``), and ``K`` and the step count of the one
tuned configuration, are chosen on the training split only: a prefix written from the
statements of the first ``tune_symbols`` training symbols, read back by those bindings' own
training read questions, scored by the first greedy token. ``len(sizes) x len(lrs)``
optimisation runs, each snapshotted at every count in ``steps``: ``len(sizes) x len(lrs) x
len(steps)`` configurations. No evaluation prompt chooses anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.compare.rows import Cost, Row, score
from fmi.core.forward import answer_only
from fmi.core.generate import Generated, decode
from fmi.core.hooks import HookFn
from fmi.core.prompts import Encoded, encode
from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun
from fmi.memory.write import write_prompt

SITE = "hook_embed"
"""Where the prefix is written: the token embeddings as the first block receives them."""

MAX_SIZE = 64


@dataclass(frozen=True)
class SoftPrefixConfig:
    """The soft prefix's sizes, steps, learning rates and initialisation.

    - ``sizes``: memory tokens ``K`` per prefix (each 1..64; the paper's range is 8-32).
    - ``steps``: Adam step counts reported, snapshots of one optimisation run per ``K``.
    - ``lr``: the Adam learning rate used without a training split, in units of the RMS
      coordinate of real token embeddings at ``hook_embed``; ``lrs`` are those tuning tries.
    - ``init``: the initial draw's spread, in units of the embeddings' per-coordinate std.
    - ``tune_symbols``: training symbols whose statements the tuning prefixes compress.
    - ``seed``: the initial draw's generator seed (the same ``P`` at step 0 for every ``lr``).

    The defaults (2 sizes x 2 step counts, 2 learning rates tried) keep a Gemma-3-270M split
    near ten minutes on 2 CPU cores: every row decodes every query with the prefix prepended.
    """

    sizes: tuple[int, ...] = (8, 32)
    steps: tuple[int, ...] = (2, 5)
    lr: float = 0.3
    lrs: tuple[float, ...] = (0.3, 1.0)
    init: float = 1.0
    tune_symbols: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or any(not 1 <= k <= MAX_SIZE for k in self.sizes):
            raise ConfigError(f"sizes must be token counts in 1..{MAX_SIZE}, got {self.sizes}")
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"sizes must be distinct, got {self.sizes}")
        if not self.steps or min(self.steps) < 1 or len(set(self.steps)) != len(self.steps):
            raise ConfigError(f"steps must be distinct step counts >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.lrs or not min(self.lrs) > 0:
            raise ConfigError(f"lrs must be positive learning rates, got {self.lrs}")
        if not self.init > 0:
            raise ConfigError(f"init must be positive, got {self.init}")
        if self.tune_symbols < 1:
            raise ConfigError(f"tune_symbols must be >= 1, got {self.tune_symbols}")

    @classmethod
    def quick(cls, **overrides: Any) -> SoftPrefixConfig:
        """A tiny configuration for tests and smoke runs."""
        small: dict[str, Any] = {
            "sizes": (2, 4),
            "steps": (1, 3),
            "lrs": (0.3, 1.0),
            "tune_symbols": 3,
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- prepending -----------------------------------------------------------------------------


def insert_prefix(ids: list[int], k: int, placeholder: int, lead: int) -> list[int]:
    """``ids`` with ``k`` copies of ``placeholder`` after its first ``lead`` ids (the ``<bos>``).

    >>> insert_prefix([2, 10, 11], 3, 0, lead=1)
    [2, 0, 0, 0, 10, 11]
    >>> insert_prefix([10, 11], 2, 7, lead=0)
    [7, 7, 10, 11]
    """
    if k < 1:
        raise ValueError(f"a prefix needs at least one token, got k={k}")
    return [*ids[:lead], *([placeholder] * k), *ids[lead:]]


def prefix_columns(starts: Int[Tensor, " batch"], k: int) -> Int[Tensor, "batch k"]:
    """The columns of each row's ``k`` prefix positions, the first at ``starts[b]``.

    >>> prefix_columns(torch.tensor([0, 2]), 3)
    tensor([[0, 1, 2],
            [2, 3, 4]])
    """
    return starts[:, None] + torch.arange(k)[None, :]


class PrefixTokenizer:
    """A tokenizer that inserts ``k`` placeholder ids before each text's first real token.

    It answers what :func:`fmi.core.prompts.encode` asks of a tokenizer (``tok(text)["input_ids"]``,
    ``all_special_ids``, ``pad_token_id``) and passes everything else (``decode``) through, so
    the left padding, the mask and the answer column are ``encode``'s own. The placeholder is
    the id ``encode`` pads with; :func:`prefix_starts` finds the prefix in an encoded batch.
    """

    def __init__(self, tokenizer, k: int) -> None:
        if k < 1:
            raise ValueError(f"a prefix needs at least one token, got k={k}")
        self.inner, self.k = tokenizer, k
        pad = tokenizer.pad_token_id
        self.placeholder = int(pad) if pad is not None else 0
        self.all_special_ids = tokenizer.all_special_ids
        self.pad_token_id = tokenizer.pad_token_id

    def lead(self, ids: list[int]) -> int:
        """1 when ``ids`` open with the tokenizer's own ``<bos>``, else 0."""
        bos = getattr(self.inner, "bos_token_id", None)
        return int(bos is not None and len(ids) > 0 and ids[0] == bos)

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        ids = list(self.inner(text, **kwargs)["input_ids"])
        return {"input_ids": insert_prefix(ids, self.k, self.placeholder, self.lead(ids))}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def prefix_starts(ptok: PrefixTokenizer, texts: list[str], enc: Encoded) -> Int[Tensor, " n"]:
    """The column of each row's first prefix position in ``enc`` (``encode(ptok, texts)``)."""
    leads = torch.tensor([ptok.lead(list(ptok.inner(t)["input_ids"])) for t in texts])
    return enc.pad + leads


def prefix_hook(prefix: Float[Tensor, "k d"], starts: Int[Tensor, " batch"]) -> HookFn:
    """Overwrite row ``b``'s activations at columns ``starts[b] .. starts[b] + k - 1`` by the
    ``k`` prefix vectors (every row gets the same prefix); nothing else changes.

    Stateful like :func:`fmi.core.hooks.add_at_positions`: it counts absolute positions across
    calls, so KV-cached generation steps (``[batch, 1, d]``, after the prompt) pass through.
    Gradients flow into ``prefix``. Use a fresh hook per forward or generation.
    """
    if prefix.ndim != 2 or prefix.shape[0] < 1:
        raise ValueError(f"prefix must be [k >= 1, d], got {tuple(prefix.shape)}")
    cols = prefix_columns(starts, prefix.shape[0])
    state = {"offset": 0}

    def hook(act: Tensor, hook: object) -> Tensor:
        seq, offset = act.shape[1], state["offset"]
        state["offset"] = offset + seq
        local = cols.to(act.device) - offset
        inside = (local >= 0) & (local < seq)
        if not bool(inside.any()):
            return act
        if not bool(inside.all()):
            raise ValueError("a prefix straddles two calls of its hook (a chunked prompt?)")
        rows = torch.arange(act.shape[0], device=act.device)[:, None].expand_as(local)
        out = act.clone()
        out[rows, local] = prefix.to(act.device, act.dtype).expand(act.shape[0], -1, -1)
        return out

    return hook


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """One optimisation run: the prefix after each reported step count, the mean training loss
    after ``t`` steps for ``t = 0..max(steps)``, the seconds spent up to each reported count,
    and the site's embedding scale (RMS coordinate) the prefix was drawn and stepped at."""

    snapshots: dict[int, Float[Tensor, "k d"]]
    losses: list[float]
    seconds: dict[int, float]
    scale: float


@torch.inference_mode()
def embedding_stats(
    model, texts: list[str], batch_size: int = 16
) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"], float]:
    """Per-coordinate mean and std of the real (non-special) tokens' activations at
    ``hook_embed`` over ``texts``, and their RMS coordinate ``sqrt(mean |e|^2 / d)``."""
    got = []
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        _, cache = model.bridge.run_with_cache(
            enc.tokens,
            attention_mask=enc.mask,
            names_filter=lambda n: n == SITE,
            stop_at_layer=1,
        )
        got.append(cache[SITE][enc.content].float())
    acts = torch.cat(got)
    rms = float(acts.pow(2).mean().sqrt())
    return acts.mean(0), acts.std(0, unbiased=False), rms


def init_prefix(
    k: int, mean: Float[Tensor, " d"], std: Float[Tensor, " d"], init: float, seed: int
) -> Float[Tensor, "k d"]:
    """``mean + init * std * z`` with ``z ~ N(0, 1)`` from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k, mean.shape[0], generator=g).to(mean.device)
    return mean[None] + init * std[None] * z


def _batches(ptok: PrefixTokenizer, texts: list[str], batch_size: int):
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = encode(ptok, chunk)
        out.append((enc, prefix_starts(ptok, chunk, enc), slice(start, start + len(chunk))))
    return out


def _loss(model, batches, prefix: Tensor, targets: Tensor, n: int, grad: bool):
    """The mean cross-entropy over all statements with ``prefix`` prepended, and with ``grad``
    its gradient with respect to ``prefix`` alone (accumulated batch by batch)."""
    total, g = 0.0, torch.zeros_like(prefix)
    for enc, starts, rows in batches:
        with torch.enable_grad() if grad else torch.inference_mode():
            p = prefix.detach().requires_grad_(grad)
            with model.bridge.hooks(fwd_hooks=[(SITE, prefix_hook(p, starts))]):
                logits = model.bridge(
                    enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
                )
            loss = torch.nn.functional.cross_entropy(
                logits[:, -1].float(), targets[rows].to(logits.device), reduction="sum"
            ) / max(n, 1)
            if grad:
                (part,) = torch.autograd.grad(loss, p)
                g += part
        total += float(loss.detach())
    return total, g


def optimise(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    k: int,
    steps: tuple[int, ...],
    lr: float,
    *,
    init: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> Fit:
    """A ``k``-token prefix written from all ``texts`` at once: ``max(steps)`` Adam steps
    (learning rate ``lr`` times the embedding scale) on the mean cross-entropy of each text's
    ``targets`` token at its answer position, with the prefix prepended to every text.

    Each step is one forward and one backward pass over every text; the loss after the last
    step costs one more forward (``Fit.losses``). The model's parameters get no gradient.
    """
    if not texts or len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts and {len(targets)} targets")
    began = time.perf_counter()
    mean, std, scale = embedding_stats(model, texts, batch_size)
    prefix = init_prefix(k, mean, std, init, seed).requires_grad_(True)
    ptok = PrefixTokenizer(model.tokenizer, k)
    batches = _batches(ptok, texts, batch_size)
    opt = torch.optim.Adam([prefix], lr=lr * scale)
    snapshots, seconds, losses = {}, {}, []
    wanted = set(steps)
    for t in range(1, max(steps) + 1):
        loss, grad = _loss(model, batches, prefix, targets, len(texts), grad=True)
        losses.append(loss)  # the loss after t - 1 steps
        prefix.grad = grad
        opt.step()
        if t in wanted:
            snapshots[t] = prefix.detach().clone()
            seconds[t] = time.perf_counter() - began
    losses.append(_loss(model, batches, prefix, targets, len(texts), grad=False)[0])
    return Fit(snapshots, losses, seconds, scale)


# --- reading ----------------------------------------------------------------------------------


def prefix_greedy(
    model,
    texts: list[str],
    prefix: Float[Tensor, "k d"],
    *,
    label_ids: Int[Tensor, " n"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts`` with ``prefix`` prepended to each (:func:`fmi.core.generate.decode`
    over :class:`PrefixTokenizer` batches, with :func:`prefix_hook` at ``hook_embed``)."""
    ptok = PrefixTokenizer(model.tokenizer, int(prefix.shape[0]))
    view = SimpleNamespace(bridge=model.bridge, tokenizer=ptok)

    def hooks_for(enc: Encoded, start: int) -> list[tuple[str, HookFn]]:
        chunk = texts[start : start + enc.tokens.shape[0]]
        return [(SITE, prefix_hook(prefix, prefix_starts(ptok, chunk, enc)))]

    return decode(
        view,
        texts,
        hooks_for,
        label_ids=label_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


def read_outputs(model, run: SplitRun, cfg: RecallConfig, prefix: Tensor) -> Outputs:
    """Every query of ``run`` decoded with ``prefix`` prepended (always on, no retrieval)."""
    gen = prefix_greedy(
        model,
        run.qs.texts,
        prefix,
        label_ids=run.label_ids,
        max_new_tokens=run.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    return Outputs(gen.tokens, gen.label_pick)


# --- tuning and rows --------------------------------------------------------------------------


def tune(model, train_split, cfg: RecallConfig, pcfg: SoftPrefixConfig) -> tuple[dict, list[dict]]:
    """``K`` x ``lr`` x steps on the training split: a prefix written from the statements of the
    first ``tune_symbols`` training symbols, read back by each binding's own training read
    question, scored by the first greedy token. The best accuracy wins; ties go to fewer steps,
    then fewer tokens, then the smaller learning rate."""
    from fmi.experiments.queries import unique_bindings
    from fmi.memory.write import label_token

    symbols = list(dict.fromkeys(b.symbol for b in train_split.bindings))
    keep = set(symbols[: pcfg.tune_symbols])
    entries = [b for b in unique_bindings(train_split.bindings) if b.symbol in keep]
    t = train_split.templates
    texts = [write_prompt(t, b)[0] for b in entries]
    reads = [t.prompt("read", b) for b in entries]
    targets = torch.tensor([label_token(model.tokenizer, t, b.label) for b in entries])
    curve = []
    for k in pcfg.sizes:
        for lr in pcfg.lrs:
            fit = optimise(
                model,
                texts,
                targets,
                k,
                pcfg.steps,
                lr,
                init=pcfg.init,
                seed=pcfg.seed,
                batch_size=cfg.batch_size,
            )
            for s in sorted(fit.snapshots):
                out = prefix_greedy(
                    model, reads, fit.snapshots[s], max_new_tokens=1, batch_size=cfg.batch_size
                )
                got = [o[:1] == (y,) for o, y in zip(out.tokens, targets.tolist(), strict=True)]
                curve.append(
                    {
                        "K": k,
                        "lr": lr,
                        "steps": s,
                        "read": sum(got) / len(got),
                        "loss": fit.losses[s],
                    }
                )
    return pick(curve), curve


def pick(curve: list[dict]) -> dict:
    """The best point: highest ``read``; ties to fewer steps, fewer tokens, smaller ``lr``.

    >>> pick([{"read": 0.5, "steps": 5, "K": 8, "lr": 0.1},
    ...       {"read": 0.5, "steps": 2, "K": 16, "lr": 0.3},
    ...       {"read": 0.25, "steps": 1, "K": 8, "lr": 0.1}])["steps"]
    2
    """
    return max(curve, key=lambda p: (p["read"], -p["steps"], -p["K"], -p["lr"]))


def soft_prefix_rows(
    model, run: SplitRun, cfg: RecallConfig, pcfg: SoftPrefixConfig, train_split=None
) -> tuple[list[Row], dict]:
    """One row per (``K``, steps) on ``run``'s split: a prefix written from all its statements
    at the learning rate tuned for that ``K`` on ``train_split`` (:func:`tune`; without it,
    ``pcfg.lr``), prepended to every query. The tuned (``K``, steps) is marked in the details."""
    began = time.perf_counter()
    if train_split is not None:
        best, curve = tune(model, train_split, cfg, pcfg)
        lr_of = {k: pick([p for p in curve if p["K"] == k])["lr"] for k in pcfg.sizes}
    else:
        best, curve, lr_of = {}, [], dict.fromkeys(pcfg.sizes, pcfg.lr)
    tune_s = time.perf_counter() - began
    n_sym = pcfg.tune_symbols
    budget = (
        f"{len(curve)} configurations ({len(pcfg.sizes)} sizes x {len(pcfg.lrs)} learning rates "
        f"x {len(pcfg.steps)} step counts; {len(pcfg.sizes) * len(pcfg.lrs)} optimisation runs) "
        f"on {n_sym} training symbols"
        if curve
        else "none (fixed learning rate)"
    )
    templates = run.split.templates  # type: ignore[attr-defined]
    texts = [write_prompt(templates, e)[0] for e in run.entries]
    targets = torch.tensor([e.target for e in run.entries])
    n = len(texts)
    on = torch.ones(len(run.qs.texts), dtype=torch.bool)
    rows, points, fits = [], [], {}
    for k in pcfg.sizes:
        fit = optimise(
            model,
            texts,
            targets,
            k,
            pcfg.steps,
            lr_of[k],
            init=pcfg.init,
            seed=pcfg.seed,
            batch_size=cfg.batch_size,
        )
        fits[k] = {"losses": fit.losses, "seconds": fit.seconds, "scale": fit.scale}
        for s in sorted(fit.snapshots):
            out = read_outputs(model, run, cfg, fit.snapshots[s])
            cost = Cost(
                s,
                s,
                fit.seconds[s],
                f"{s} Adam step(s), each one forward and one backward pass over all {n} "
                f"statements at once with the {k}-token prefix prepended (passes over the "
                f"split, not per binding), after an embedding-only pass for the scale",
            )
            tuned = bool(best) and (best["K"], best["steps"]) == (k, s)
            row = score(
                model,
                run,
                cfg,
                f"GradMem soft prefix (K={k}, {s} step{'s' if s > 1 else ''})",
                "gradient-written prefix",
                out,
                cost,
                active=on,
                detail={
                    "K": k,
                    "steps": s,
                    "lr": lr_of[k],
                    "site": SITE,
                    "statements": n,
                    "embedding_scale": fit.scale,
                    "loss_start": fit.losses[0],
                    "final_loss": fit.losses[s],
                    "tuning_budget": budget,
                    "tuned": tuned,
                    "tuned_choice": {x: best[x] for x in ("K", "steps", "lr")} if best else None,
                    "tuning_seconds": tune_s,
                },
            )
            rows.append(row)
            points.append(
                {
                    "K": k,
                    "steps": s,
                    "lr": lr_of[k],
                    "read": row.summary["read"],
                    "write": row.summary["write"],
                    "plain": row.summary["plain"],
                    "unrelated_changed": row.summary["unrelated_changed"],
                    "loss": fit.losses[s],
                    "seconds": fit.seconds[s],
                    "tuned": tuned,
                }
            )
    return rows, {
        "curve": points,
        "fits": fits,
        "config": pcfg.to_dict(),
        "tuning": {
            "best": best,
            "lr_by_size": lr_of,
            "curve": curve,
            "budget": budget,
            "seconds": tune_s,
        },
    }
