"""The in-context ceiling: the write statements placed before the question, nothing injected.

Two variants. ``right``: only the statement of the binding the question asks for. ``both``:
every statement about the question's symbol (both conflicting contexts, in the order they were
written), so the model itself must pick the context. Plain prompts get the symbol's statements
(``right`` takes its first one), unrelated prompts the statements of the symbols in turn: text
in the prompt cannot be switched off for questions that do not need it.
"""

from __future__ import annotations

from fmi.compare.rows import Cost, Row, entries_in_play, score
from fmi.config import RecallConfig
from fmi.evaluate import Outputs, SplitRun
from fmi.generate import greedy

VARIANTS = ("right", "both")


def statement(templates, entry) -> str:
    """``In game A, blicket means red``: the write prompt followed by its label."""
    return templates.prompt("write", entry) + templates.target("write", entry.label)


def context_prompts(run: SplitRun, variant: str) -> list[str]:
    """Each query prefixed with the statements ``variant`` puts in its context."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    templates = run.split.templates  # type: ignore[attr-defined]
    chosen = entries_in_play(run, own_only=variant == "right")
    out = []
    for text, ids in zip(run.qs.texts, chosen, strict=True):
        prefix = ". ".join(statement(templates, run.entries[i]) for i in ids)
        out.append(f"{prefix}.\n{text}")
    return out


def in_context_row(model, run: SplitRun, cfg: RecallConfig, variant: str) -> Row:
    """The in-context method's row for ``variant`` (``right`` or ``both``)."""
    prompts = context_prompts(run, variant)
    gen = greedy(
        model,
        prompts,
        site=cfg.inject_site,
        label_ids=run.label_ids,
        max_new_tokens=run.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    tok = model.tokenizer
    added = [
        len(tok(p)["input_ids"]) - len(tok(t)["input_ids"])
        for p, t in zip(prompts, run.qs.texts, strict=True)
    ]
    mean_added = sum(added) / len(added)
    cost = Cost(0, 0, 0.0, f"no write; prompts grow by {mean_added:.1f} tokens on average")
    name = "in-context (right statement)" if variant == "right" else "in-context (both statements)"
    return score(
        model,
        run,
        cfg,
        name,
        "in-context",
        Outputs(gen.tokens, gen.label_pick),
        cost,
        detail={"mean_added_tokens": mean_added, "example": prompts[run.qs.index("read")[0]]},
    )
