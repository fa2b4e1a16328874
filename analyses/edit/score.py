"""Scoring held edits the same way for every method: greedy generation, no teacher forcing.

For a group of edits held at once, every probe is decoded greedily through the method's prompt
rewrite and hooks (:class:`analyses.edit.method.Held`), in one :func:`fmi.core.generate.decode`
call:

- ``efficacy``: the rewrite prompt's output starts with ``target_new``, word-bounded
  (:func:`fmi.experiments.metrics.text_matches`);
- ``generalization``: the same for each paraphrase prompt;
- ``specificity``: each neighbourhood prompt's new tokens equal the unedited model's;
- ``unrelated_changed``: a generic prompt's new tokens differ from the unedited model's.

And the literature's probability scores, on the first answer token (the decode's first step):
``rewrite_score`` and ``paraphrase_score`` count ``P(new) > P(true)``, ``neighbourhood_score``
counts ``P(answer) > P(new)`` for a neighbour with a known answer. A probe whose two answers
start with the same token says nothing on the first token and is left out of that score.

>>> outcome = Outcome("rewrite", "0", hit=True, margin=1.5)
>>> summary([outcome, Outcome("rewrite", "1", hit=False, margin=-0.5)])["efficacy"]
0.5
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Held
from fmi.core.generate import decode
from fmi.experiments.intervals import wilson
from fmi.experiments.metrics import text_matches
from fmi.memory.answers import answer_positions

KINDS = ("rewrite", "paraphrase", "neighbour", "unrelated")
RATE_OF = {
    "rewrite": "efficacy",
    "paraphrase": "generalization",
    "neighbour": "specificity",
    "unrelated": "unrelated_changed",
}
SCORE_OF = {
    "rewrite": "rewrite_score",
    "paraphrase": "paraphrase_score",
    "neighbour": "neighbourhood_score",
}
METRICS = (*RATE_OF.values(), *SCORE_OF.values())


@dataclass(frozen=True)
class Group:
    """Edits held at once, which of them are scored, and the generic prompts scored with them."""

    edits: tuple[EditCase, ...]
    scored: tuple[int, ...]
    unrelated: tuple[str, ...]


def groups(
    cases: Sequence[EditCase], held: int, scored: int, unrelated: Sequence[str], seed: int
) -> list[Group]:
    """The groups that score ``scored`` edits with ``held`` edits held at once.

    The cases are shuffled by ``random.Random(seed)``; the scored edits are always the first
    ``scored`` of that order, whatever ``held`` is, so every T scores the same edits. With
    ``held >= scored`` there is one group of the first ``held`` cases; otherwise consecutive
    groups of ``held`` (disjoint) until ``scored`` edits are covered. The generic prompts are
    dealt round-robin over the groups, each scored once.

    >>> cases = [EditCase(str(i), f"S{i}", "{} is in", "A", "B") for i in range(6)]
    >>> [(len(g.edits), g.scored) for g in groups(cases, 2, 4, ["u1", "u2", "u3"], seed=0)]
    [(2, (0, 1)), (2, (0, 1))]
    >>> [g.unrelated for g in groups(cases, 2, 4, ["u1", "u2", "u3"], seed=0)]
    [('u1', 'u3'), ('u2',)]
    >>> [(len(g.edits), g.scored) for g in groups(cases, 9, 3, [], seed=0)]
    [(6, (0, 1, 2))]
    """
    order = list(cases)
    random.Random(seed).shuffle(order)
    n_scored = min(scored, len(order))
    if held >= n_scored:
        chunks = [(order[: min(held, len(order))], range(n_scored))]
    else:
        chunks = [
            (order[lo : lo + held], range(min(held, n_scored - lo)))
            for lo in range(0, n_scored, held)
        ]
    count = len(chunks)
    return [
        Group(tuple(edits), tuple(rows), tuple(unrelated[g::count]))
        for g, (edits, rows) in enumerate(chunks)
    ]


@dataclass(frozen=True)
class Probe:
    """One prompt to decode: its kind, its case, what counts as a hit, and the token ids whose
    first-step log-probabilities its probability score compares (``(better, worse)``)."""

    kind: str
    case_id: str
    prompt: str
    want: str = ""  # efficacy / generalization: the target text
    pair: tuple[int, int] | None = None


def first_token(tokenizer, prompt: str, target: str) -> int:
    """The first token of ``target`` as it follows ``prompt``."""
    return answer_positions(tokenizer, prompt, answer_text(target), "")[0][0]


def _pair(tokenizer, prompt: str, better: str, worse: str) -> tuple[int, int] | None:
    if not better.strip() or not worse.strip():
        return None
    a, b = first_token(tokenizer, prompt, better), first_token(tokenizer, prompt, worse)
    return None if a == b else (a, b)


def probes(tokenizer, group: Group) -> list[Probe]:
    """Every prompt ``group`` is scored on: per scored edit its rewrite, paraphrases and
    neighbours, then the generic prompts."""
    out: list[Probe] = []
    for row in group.scored:
        c = group.edits[row]
        for kind, prompts in (("rewrite", [c.rewrite]), ("paraphrase", list(c.paraphrases))):
            out.extend(
                Probe(
                    kind,
                    c.case_id,
                    p,
                    c.target_new,
                    _pair(tokenizer, p, c.target_new, c.target_true),
                )
                for p in prompts
            )
        out.extend(
            Probe(
                "neighbour",
                c.case_id,
                n.prompt,
                "",
                _pair(tokenizer, n.prompt, n.answer, c.target_new),
            )
            for n in c.neighbourhood
        )
    out.extend(Probe("unrelated", "", p) for p in group.unrelated)
    return out


@dataclass(frozen=True)
class Outcome:
    """A probe's result: ``hit`` for its rate (unrelated: the output changed) and the first-token
    log-probability margin ``better - worse`` (``None``: no probability score)."""

    kind: str
    case_id: str
    hit: bool
    margin: float | None = None
    output: str = ""


def judge(
    probe: Probe,
    output: str,
    tokens: tuple[int, ...],
    base: tuple[int, ...] | None,
    margin: float | None,
) -> Outcome:
    """The :class:`Outcome` of ``probe`` given its decoded ``output`` text and new ``tokens``,
    and the unedited model's new tokens ``base`` (needed by neighbours and generic prompts).

    >>> p = Probe("rewrite", "0", "Rome is in", "Italy")
    >>> judge(p, " Italy, a", (1, 2), None, None).hit, judge(p, " Italyn", (3,), None, None).hit
    (True, False)
    >>> n = Probe("neighbour", "0", "Paris is in")
    >>> judge(n, "", (4, 5), (4, 5), None).hit, judge(n, "", (4, 6), (4, 5), None).hit
    (True, False)
    >>> judge(Probe("unrelated", "", "Hi"), "", (4, 6), (4, 5), None).hit
    True
    """
    if probe.kind in ("rewrite", "paraphrase"):
        hit = text_matches(output, probe.want)
    elif base is None:
        raise ValueError(f"a {probe.kind} probe needs the unedited model's output")
    elif probe.kind == "neighbour":
        hit = tokens == base
    else:
        hit = tokens != base
    return Outcome(probe.kind, probe.case_id, hit, margin, output)


def score_group(
    model,
    held: Held,
    found: list[Probe],
    base: dict[str, tuple[int, ...]] | None,
    *,
    max_new_tokens: int,
    batch_size: int,
) -> tuple[list[Outcome], dict[str, tuple[int, ...]]]:
    """Decode ``found`` under ``held`` and judge each; also return every prompt's new tokens
    (the unedited run's are ``base`` for the others; ``None``: this is the unedited run)."""
    ids = torch.tensor([p.pair if p.pair else (0, 0) for p in found], dtype=torch.long)
    texts = held.prompts([p.prompt for p in found])
    out = decode(
        model,
        texts,
        held.hooks_for,
        score_ids=ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    tok = model.tokenizer
    tokens = {p.prompt: t for p, t in zip(found, out.tokens, strict=True)}
    reference = base if base is not None else tokens
    outcomes = []
    for p, t, lp in zip(found, out.tokens, out.scores, strict=True):
        margin = lp[0] - lp[1] if p.pair else None
        text = tok.decode(list(t), skip_special_tokens=True)
        outcomes.append(judge(p, text, t, reference.get(p.prompt), margin))
    return outcomes, tokens


def summary(outcomes: Sequence[Outcome]) -> dict[str, float | int | list[float] | None]:
    """Every metric's rate, its Wilson 95% interval (``<metric>_ci``) and its count
    (``<metric>_n``); probability scores count margins > 0 among probes with a margin.

    >>> s = summary([Outcome("neighbour", "0", True, -0.2), Outcome("neighbour", "0", True)])
    >>> s["specificity"], s["specificity_n"], s["neighbourhood_score"], s["neighbourhood_score_n"]
    (1.0, 2, 0.0, 1)
    >>> s["efficacy"] is None and s["efficacy_n"] == 0
    True
    """
    hits: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        hits[RATE_OF[o.kind]].append(o.hit)
        if o.margin is not None and o.kind in SCORE_OF:
            hits[SCORE_OF[o.kind]].append(o.margin > 0)
    out: dict[str, float | int | list[float] | None] = {}
    for metric in METRICS:
        got = hits.get(metric, [])
        k, n = sum(got), len(got)
        out[metric] = k / n if n else None
        out[f"{metric}_ci"] = list(wilson(k, n)) if n else None
        out[f"{metric}_n"] = n
    return out


def cases_scored(outcomes: Sequence[Outcome]) -> int:
    """How many distinct edits ``outcomes`` scored (by their rewrite probes)."""
    return len({o.case_id for o in outcomes if o.kind == "rewrite"})


def max_tokens(tokenizer, cases: Sequence[EditCase]) -> int:
    """The longest target (new or true) in tokens, plus 2: enough greedy steps for every target
    and the token after it (the word boundary)."""
    longest = max(
        len(answer_positions(tokenizer, c.rewrite, answer_text(t), "")[0])
        for c in cases
        for t in (c.target_new, c.target_true)
    )
    return longest + 2
