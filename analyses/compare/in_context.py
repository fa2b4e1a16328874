"""The in-context ceiling: the write statements placed before the question, nothing injected.

Three variants. ``right``: only the statement of the binding the question asks for. ``both``:
every statement about the question's symbol (both conflicting contexts, in the order they were
written), so the model itself must pick the context. ``few-shot``: ``both`` after
:data:`SHOTS` worked examples from training symbols (their statements, one question and its
answer), so the model sees the format it should answer in. Plain prompts get the symbol's statements
(``right`` takes its first one), unrelated prompts the statements of the symbols in turn: text
in the prompt cannot be switched off for questions that do not need it.
"""

from __future__ import annotations

from analyses.compare.rows import Cost, Row, entries_in_play, score
from fmi.core.generate import greedy
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun

VARIANTS = ("right", "both", "few-shot")
SHOTS = 2
NAMES = {
    "right": "in-context (right statement)",
    "both": "in-context (both statements)",
    "few-shot": f"in-context (both statements, {SHOTS}-shot)",
}


def statement(templates, entry) -> str:
    """``In game A, blicket means red``: the write prompt followed by its label."""
    return templates.prompt("write", entry) + templates.target("write", entry.label)


def shots(train_split, k: int = SHOTS) -> str:
    """``k`` worked examples from the first training symbols: each symbol's statements, then a
    question about its last context and the answer, a blank line after each."""
    by_symbol: dict[str, list] = {}
    for b in train_split.bindings:
        if b.read_context == b.context:  # the written form, not a paraphrased read
            by_symbol.setdefault(b.symbol, []).append(b)
    t = train_split.templates
    out = []
    for bindings in list(by_symbol.values())[:k]:
        said = ". ".join(statement(t, b) for b in bindings)
        asked = bindings[-1]
        out.append(f"{said}.\n{t.prompt('read', asked)}{t.target('read', asked.label)}\n\n")
    return "".join(out)


def context_prompts(run: SplitRun, variant: str, train_split=None) -> list[str]:
    """Each query prefixed with the statements ``variant`` puts in its context (``few-shot``
    needs ``train_split`` for its examples)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "few-shot" and train_split is None:
        raise ValueError("the few-shot variant needs the training split for its examples")
    templates = run.split.templates  # type: ignore[attr-defined]
    chosen = entries_in_play(run, own_only=variant == "right")
    head = shots(train_split) if variant == "few-shot" else ""
    out = []
    for text, ids in zip(run.qs.texts, chosen, strict=True):
        prefix = ". ".join(statement(templates, run.entries[i]) for i in ids)
        out.append(f"{head}{prefix}.\n{text}")
    return out


def in_context_row(model, run: SplitRun, cfg: RecallConfig, variant: str, train_split=None) -> Row:
    """The in-context method's row for ``variant`` (one of :data:`VARIANTS`)."""
    prompts = context_prompts(run, variant, train_split)
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
    name = NAMES[variant]
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
