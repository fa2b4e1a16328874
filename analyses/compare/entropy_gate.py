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
  (:func:`analyses.compare.attention_entropy.attention_entropy`, where what is FlashMem's and
  what is our choice is told). It needs the attention pattern, which neither the write nor the
  read forward keeps, so the row pays one extra frozen forward (measured, in its cost).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from analyses.compare.attention_entropy import SplitAttention, attention_entropy, split_attention
from analyses.compare.rows import Cost, Row, fired, mix, score
from fmi.core.forward import collect
from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun
from fmi.experiments.metrics import next_token_entropy
from fmi.experiments.queries import build_queries, unique_bindings
from fmi.memory.retrieve import Decision

SIGNALS = ("next_token", "attention")
"""What :func:`training_thresholds` measures: next-token entropy, or attention entropy."""


def threshold(entropy: Float[Tensor, " n"], keep: float) -> float:
    """The entropy above which ``keep`` of ``entropy`` lies (a prompt fires at or above it).

    The ``lower`` quantile errs toward firing: ``n - floor((1 - keep) (n - 1))`` of ``n``
    distinct values fire (3 of 4 at ``keep=0.5``; all 64 at ``keep=0.99``).

    >>> e = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> threshold(e, 0.5), int(gate(e, threshold(e, 0.5)).sum())
    (2.0, 3)
    """
    return float(np.quantile(entropy.cpu().numpy(), 1.0 - keep, method="lower"))


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
    written = gate(written_entropy, taus["write"]).to(dual.active.device)
    asked = gate(question_entropy, taus["read"]).to(dual.active.device)
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
