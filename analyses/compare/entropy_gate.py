"""Entropy-gated writing and reading (a FlashMem-style monitor) on top of ``dual_key``.

The model's own uncertainty at the answer position decides whether the memory acts: a
statement is written only when the frozen model is uncertain how it ends, and a question is
injected into only when the model is uncertain of its answer. Both thresholds are chosen on
training prompts so that ``entropy_keep`` of them fire. Two signals measure the uncertainty:

- next-token entropy (row ``entropy-gated dual_key``): at ``ln_final.hook_out`` the gate costs
  nothing extra, since the logits that give the entropy are computed from the very state the
  value is added to;
- attention entropy (row ``attention-entropy-gated dual_key``), FlashMem's signal: the Shannon
  entropy of the answer position's attention over the prompt, averaged over heads and layers
  (:func:`attention_entropy`). It needs the attention pattern, which neither the write nor the
  read forward keeps, so the row pays one extra frozen forward (measured, in its cost).

FlashMem (Hou, Chen, Wan, Qin, "FlashMem: Distilling Intrinsic Latent Memory via Computation
Reuse", arXiv:2601.05505, 2026) triggers its consolidator with "a parameter-free Cognitive
Monitor [that] leverages attention entropy to adaptively trigger consolidation only when high
epistemic uncertainty is detected" (abstract). Followed here: the signal is the Shannon entropy
of attention weights at the current (last) position, it is parameter-free, and a prompt fires
when it is high. The stored copies of the paper available to us hold its abstract only, not the
monitor's equations, so the rest is our choice, not FlashMem's: entropy in nats of each head's
post-softmax pattern (``blocks.{L}.attn.hook_pattern``) over all key positions, unnormalized
(no division by ``log n_keys``), the mean over heads, then the mean over ``layers`` (default:
every layer), and a threshold that lets ``entropy_keep`` of training prompts fire rather than a
fixed one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from analyses.compare.rows import Cost, Row, fired, mix, score
from fmi.core.forward import NO_LOGITS, collect
from fmi.core.prompts import encode
from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun
from fmi.experiments.metrics import next_token_entropy
from fmi.experiments.queries import build_queries, unique_bindings
from fmi.memory.retrieve import Decision
from fmi.memory.write import write_prompt

SIGNALS = ("next_token", "attention")
"""What :func:`training_thresholds` measures: next-token entropy, or attention entropy."""


def threshold(entropy: Float[Tensor, " n"], keep: float) -> float:
    """The entropy above which ``keep`` of ``entropy`` lies (a prompt fires at or above it).

    The ``lower`` quantile errs toward firing: ``n - floor((1 - keep) (n - 1))`` of ``n``
    distinct values fire (3 of 4 at ``keep=0.5``; all 64 at ``keep=0.99``).
    """
    return float(np.quantile(entropy.numpy(), 1.0 - keep, method="lower"))


def gate(entropy: Float[Tensor, " n"], tau: float) -> Bool[Tensor, " n"]:
    return entropy >= tau


def prompt_entropy(model, texts: list[str], batch_size: int) -> Float[Tensor, " n"]:
    """The frozen model's next-token entropy at each text's last token."""
    got = collect(
        model.bridge,
        model.tokenizer,
        texts,
        [],
        batch_size=batch_size,
        reduce_last=lambda logits, rows: next_token_entropy(logits),
    )
    return torch.cat(got.last)


# --- attention entropy --------------------------------------------------------------------------


def pattern_site(layer: int) -> str:
    """``blocks.{layer}.attn.hook_pattern``: post-softmax weights ``[batch, head, query, key]``.

    >>> pattern_site(3)
    'blocks.3.attn.hook_pattern'
    """
    return get_act_name("pattern", layer)


def pattern_entropy(pattern: Float[Tensor, "... key"]) -> Float[Tensor, "..."]:
    """Shannon entropy (nats) of each attention distribution over the last axis (keys).

    ``0 log 0 = 0``: keys with zero weight (left padding, masked positions) add nothing, so a
    padded row has the entropy of its unpadded row.

    >>> import math
    >>> uniform = torch.full((4,), 0.25, dtype=torch.float64)
    >>> abs(float(pattern_entropy(uniform)) - math.log(4)) < 1e-15
    True
    >>> pattern_entropy(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]])).tolist()
    [0.0, 0.6931471824645996]
    """
    return 0.0 - torch.special.xlogy(pattern, pattern).sum(-1)  # 0.0 - 0.0 is +0.0


def last_query_entropy(patterns: Sequence[Float[Tensor, "batch head query key"]]) -> Tensor:
    """Per row: :func:`pattern_entropy` of the last query's attention, mean over heads, then
    over the patterns given (one per layer). ``[batch]``."""
    per_layer = [pattern_entropy(p[:, :, -1, :].float()).mean(-1) for p in patterns]
    return torch.stack(per_layer).mean(0)


def entropy_layers(model, layers: Sequence[int] | None) -> tuple[int, ...]:
    """``layers`` checked against the model (negative counts from the end); ``None``: all."""
    n = model.bridge.cfg.n_layers
    if layers is None:
        return tuple(range(n))
    chosen = tuple(dict.fromkeys(layer % n if -n <= layer < 0 else layer for layer in layers))
    bad = [layer for layer in chosen if not 0 <= layer < n]
    if not chosen or bad:
        raise ConfigError(f"attention-entropy layers must be in 0..{n - 1}, got {list(layers)}")
    return chosen


def _keep_last_query(rows: dict[int, Tensor], layer: int):
    """A ``hook_pattern`` hook that stores the last query's row ``[batch, head, 1, key]``."""

    def hook(pattern: Tensor, hook: object) -> None:
        rows[layer] = pattern[:, :, -1:, :].detach().float().clone()

    return hook


@torch.inference_mode()
def attention_entropy(
    model, texts: list[str], batch_size: int, layers: Sequence[int] | None = None
) -> Float[Tensor, " n"]:
    """Per text: the entropy (nats) of the answer position's attention over the prompt.

    For each text, the last query position's post-softmax attention over key positions
    (``blocks.{L}.attn.hook_pattern``), its :func:`pattern_entropy` per head, the mean over
    heads, then the mean over ``layers`` (default: every layer). Texts run left-padded in
    batches of ``batch_size``, so the answer position is the last column of every row; padding
    keys carry exactly zero weight and add nothing. Only that one query row of each pattern is
    kept, and the forward stops after the deepest layer asked for (or, when that is the last
    block, skips the unembedding).

    The TransformerBridge reimplements attention for the RoPE models fmi loads (Gemma-3,
    SmolLM2/Llama: ``PositionEmbeddingsAttentionBridge``; Pythia/GPT-NeoX:
    ``JointQKVPositionEmbeddingsAttentionBridge``) and fires ``hook_pattern`` on the weights
    it multiplies the values by; fmi also loads every model with ``attn_implementation=
    "eager"``, which the Bridge needs for architectures whose attention it delegates to
    Hugging Face (a fused SDPA/flash kernel returns no weights, so ``hook_pattern`` never
    fires). A layer whose pattern did not fire raises rather than yielding a wrong entropy.
    """
    chosen = entropy_layers(model, layers)
    bridge = model.bridge
    last = max(chosen)
    limit = (
        {"stop_at_layer": last + 1}
        if last + 1 < bridge.cfg.n_layers
        else {"logits_to_keep": NO_LOGITS}
    )
    out = []
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        rows: dict[int, Tensor] = {}
        hooks = [(pattern_site(layer), _keep_last_query(rows, layer)) for layer in chosen]
        bridge.run_with_hooks(enc.tokens, fwd_hooks=hooks, attention_mask=enc.mask, **limit)
        missing = [layer for layer in chosen if layer not in rows]
        if missing:
            raise ConfigError(
                f"{pattern_site(missing[0])} did not fire: this model's attention runs in a "
                "fused kernel that returns no weights; load it with attn_implementation='eager'"
            )
        out.append(last_query_entropy([rows[layer] for layer in chosen]))
    return torch.cat(out)


def signal_entropy(
    model,
    texts: list[str],
    batch_size: int,
    signal: str = "next_token",
    layers: Sequence[int] | None = None,
) -> Float[Tensor, " n"]:
    """Per text: next-token entropy (``signal="next_token"``) or attention entropy."""
    if signal == "next_token":
        return prompt_entropy(model, texts, batch_size)
    if signal == "attention":
        return attention_entropy(model, texts, batch_size, layers)
    raise ConfigError(f"entropy signal must be one of {', '.join(SIGNALS)}, got {signal!r}")


def training_thresholds(
    model,
    train_split,
    cfg: RecallConfig,
    keep: float,
    signal: str = "next_token",
    layers: Sequence[int] | None = None,
) -> dict[str, float]:
    """Write and read thresholds from training write statements and read questions.

    ``signal``: ``"next_token"`` (the default, the ``entropy-gated dual_key`` row's) or
    ``"attention"`` (:func:`attention_entropy` over ``layers``, the attention row's).
    """
    if signal not in SIGNALS:
        raise ConfigError(f"entropy signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    entries = unique_bindings(train_split.bindings)
    qs = build_queries(train_split, entries)
    limit = cfg.calibration_prompts
    out = {}
    for kind in ("write", "read"):
        texts = [qs.texts[q] for q in qs.index(kind)][:limit]
        out[kind] = threshold(signal_entropy(model, texts, cfg.batch_size, signal, layers), keep)
    return out


@dataclass(frozen=True)
class SplitAttention:
    """A split's attention entropies, from one extra frozen forward over its distinct prompts.

    ``questions[q]`` belongs to ``run.qs.texts[q]``; ``written[i]`` to entry ``i``'s write
    statement (:func:`fmi.memory.write.write_prompt`) at its answer position, the position that
    predicts the label (the statement's last token; under ``cfg.end`` the write forward runs
    on past it, but causal attention at that position sees only the statement). Each distinct
    text runs once (``prompts`` of them): the statements are the split's write questions
    (``build_queries`` words them with the same template), so they add no prompt of their own.
    """

    questions: Float[Tensor, " q"]
    written: Float[Tensor, " n"]
    layers: tuple[int, ...]
    prompts: int
    seconds: float

    @property
    def signal(self) -> str:
        return attention_signal(self.layers)


def attention_signal(layers: Sequence[int]) -> str:
    """How the detail and the report name the signal."""
    return f"attention entropy (mean over heads, layers {', '.join(map(str, layers))})"


def split_attention(
    model, run: SplitRun, cfg: RecallConfig, layers: Sequence[int] | None = None
) -> SplitAttention:
    """:func:`attention_entropy` of ``run``'s questions and written statements (timed)."""
    chosen = entropy_layers(model, layers)
    templates = run.split.templates  # type: ignore[attr-defined]
    statements = [write_prompt(templates, e)[0] for e in run.entries]
    texts = list(dict.fromkeys([*run.qs.texts, *statements]))
    start = time.perf_counter()
    got = attention_entropy(model, texts, cfg.batch_size, chosen)
    seconds = time.perf_counter() - start
    at = {t: i for i, t in enumerate(texts)}
    return SplitAttention(
        questions=got[[at[t] for t in run.qs.texts]],
        written=got[[at[t] for t in statements]],
        layers=chosen,
        prompts=len(texts),
        seconds=seconds,
    )


# --- rows ---------------------------------------------------------------------------------------


def entropy_data(
    run: SplitRun,
    taus: dict[str, float],
    attention: SplitAttention | None = None,
    attention_taus: dict[str, float] | None = None,
) -> dict:
    """What the report plots: the thresholds, the memory-free entropy of each kind of question,
    and that of the write statements; with ``attention``, the same for attention entropy under
    ``"attention"`` (plus its ``"signal"``)."""
    kinds = ("read", "plain", "unrelated")
    out = {
        "thresholds": taus,
        "by_kind": {k: [run.base.entropy[q] for q in run.qs.index(k)] for k in kinds},
        "write": run.written.answer_entropy.tolist(),
    }
    if attention is not None:
        out["attention"] = {
            "signal": attention.signal,
            "thresholds": attention_taus,
            "by_kind": {k: attention.questions[run.qs.index(k)].tolist() for k in kinds},
            "write": attention.written.tolist(),
        }
    return out


def _gated(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    taus: dict[str, float],
    dual: Decision,
    dual_out: Outputs,
    written_entropy: Float[Tensor, " n"],
    question_entropy: Float[Tensor, " q"],
) -> tuple[Bool[Tensor, " q"], Outputs, dict]:
    """The gated decision, its outputs, and the detail shared by both gated rows."""
    written = gate(written_entropy, taus["write"])
    asked = gate(question_entropy, taus["read"])
    active = dual.active & asked & written[dual.entry.clamp_min(0)]
    detail = {
        "thresholds": taus,
        "writes_stored": float(written.float().mean()),
        "question_gate_open": fired(run, asked),
        "retrievals_saved": float(1.0 - asked.float().mean()),
        "injections_blocked": int((dual.active & ~active).sum()),
        "prompts": len(run.qs.texts),
    }
    return active, mix(active, dual_out, run.base_outputs), detail


def gated_row(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    taus: dict[str, float],
    dual: Decision,
    dual_out: Outputs,
    write_cost: Cost,
) -> Row:
    """``dual_key`` where both gates fire: the entry was written and the question is uncertain."""
    asked = torch.tensor(run.base.entropy)
    active, out, detail = _gated(
        model, run, cfg, taus, dual, dual_out, run.written.answer_entropy, asked
    )
    cost = Cost(
        write_cost.forward,
        0,
        write_cost.seconds,
        f"as dual_key; {detail['writes_stored']:.0%} of statements stored",
    )
    return score(
        model,
        run,
        cfg,
        "entropy-gated dual_key",
        "entropy gate",
        out,
        cost,
        active=active,
        detail=detail,
    )


def attention_gated_row(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    taus: dict[str, float],
    dual: Decision,
    dual_out: Outputs,
    write_cost: Cost,
    attention: SplitAttention | None = None,
    layers: Sequence[int] | None = None,
) -> Row:
    """:func:`gated_row` with FlashMem's signal: attention entropy at the answer position.

    ``taus`` come from ``training_thresholds(..., signal="attention", layers=layers)``;
    ``attention`` (:func:`split_attention`, computed here when not given) holds the split's
    entropies, so :func:`entropy_data` can reuse them. The cost counts the extra forward: one
    more frozen forward per written statement (the write forward does not keep the pattern)
    and one over every question; the note gives its measured wall time.
    """
    att = split_attention(model, run, cfg, layers) if attention is None else attention
    active, out, detail = _gated(model, run, cfg, taus, dual, dual_out, att.written, att.questions)
    detail["signal"] = att.signal
    detail["extra_forward"] = {"prompts": att.prompts, "seconds": round(att.seconds, 3)}
    cost = Cost(
        write_cost.forward + 1,
        0,
        write_cost.seconds + att.seconds,
        f"as dual_key plus one extra frozen forward, to read the attention pattern, over the "
        f"split's {att.prompts} distinct questions and statements: {att.seconds:.2f} s "
        f"measured; {detail['writes_stored']:.0%} of statements stored",
    )
    return score(
        model,
        run,
        cfg,
        "attention-entropy-gated dual_key",
        "entropy gate",
        out,
        cost,
        active=active,
        detail=detail,
    )
