"""Entropy-gated writing and reading (a FlashMem-style monitor) on top of ``dual_key``.

The model's own next-token entropy at the answer position decides whether the memory acts:
a statement is written only when the frozen model is uncertain how it ends, and a question is
injected into only when the model is uncertain of its answer. Both thresholds are chosen on
training prompts so that ``entropy_keep`` of them fire. At ``ln_final.hook_out`` the gate costs
nothing extra: the logits that give the entropy are computed from the very state the value is
added to. Attention entropy is not used.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fmi.compare.rows import Cost, Row, fired, mix, score
from fmi.config import RecallConfig
from fmi.evaluate import Outputs, SplitRun
from fmi.forward import collect
from fmi.metrics import next_token_entropy
from fmi.queries import build_queries, unique_bindings
from fmi.retrieval import Decision


def threshold(entropy: Float[Tensor, " n"], keep: float) -> float:
    """The entropy above which ``keep`` of ``entropy`` lies (a prompt fires at or above it)."""
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


def training_thresholds(model, train_split, cfg: RecallConfig, keep: float) -> dict[str, float]:
    """Write and read thresholds from training write statements and read questions."""
    entries = unique_bindings(train_split.bindings)
    qs = build_queries(train_split, entries)
    limit = cfg.calibration_prompts
    out = {}
    for kind in ("write", "read"):
        texts = [qs.texts[q] for q in qs.index(kind)][:limit]
        out[kind] = threshold(prompt_entropy(model, texts, cfg.batch_size), keep)
    return out


def entropy_data(run: SplitRun, taus: dict[str, float]) -> dict:
    """What the report plots: the thresholds, the memory-free entropy of each kind of question,
    and that of the write statements."""
    kinds = ("read", "plain", "unrelated")
    return {
        "thresholds": taus,
        "by_kind": {k: [run.base.entropy[q] for q in run.qs.index(k)] for k in kinds},
        "write": run.written.answer_entropy.tolist(),
    }


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
    written = gate(run.written.answer_entropy, taus["write"])
    asked = gate(torch.tensor(run.base.entropy), taus["read"])
    active = dual.active & asked & written[dual.entry.clamp_min(0)]
    n = len(run.qs.texts)
    detail = {
        "thresholds": taus,
        "writes_stored": float(written.float().mean()),
        "question_gate_open": fired(run, asked),
        "retrievals_saved": float(1.0 - asked.float().mean()),
        "injections_blocked": int((dual.active & ~active).sum()),
        "prompts": n,
    }
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
        mix(active, dual_out, run.base_outputs),
        cost,
        active=active,
        detail=detail,
    )
