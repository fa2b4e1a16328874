"""Which prompts a group of held edits is scored on: the groups of edits held at once, and
every probe of a group with what judges it and what it is clustered with.

>>> from analyses.edit import cases
>>> from fmi.models.tiny import neox_tokenizer
>>> case = EditCase("0", "Vinson Massif", "{} is located in", "Asia", "Antarctica",
...                 neighbourhood=(cases.Probe("Mount Erebus is located in", "Antarctica"),),
...                 relation_probes=(cases.Probe("Vinson Massif was named after"),))
>>> found = probes(neox_tokenizer(), Group((case,), (0,), ("Once upon",), "seed 0 group 0"))
>>> [(p.kind, p.cluster or "(its edit)") for p in found]   # doctest: +NORMALIZE_WHITESPACE
[('rewrite', '(its edit)'), ('neighbour', 'bystander Mount Erebus'),
 ('relation', '(its edit)'), ('unrelated', 'prompt Once upon')]
>>> found[1].versus, {p.group for p in found}
(('Antarctica', 'Asia'), {'seed 0 group 0'})
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from analyses.edit.cases import EditCase, answer_text
from fmi.memory.answers import answer_positions


@dataclass(frozen=True)
class Group:
    """Edits held at once, which of them are scored, the generic prompts scored with them, and
    the group's name in trial keys (``label``: its seed and index)."""

    edits: tuple[EditCase, ...]
    scored: tuple[int, ...]
    unrelated: tuple[str, ...]
    label: str = ""


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
    >>> [(len(g.edits), g.scored, g.label) for g in groups(cases, 2, 4, ["u1", "u2", "u3"], 0)]
    [(2, (0, 1), 'seed 0 group 0'), (2, (0, 1), 'seed 0 group 1')]
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
        Group(tuple(edits), tuple(rows), tuple(unrelated[g::count]), f"seed {seed} group {g}")
        for g, (edits, rows) in enumerate(chunks)
    ]


@dataclass(frozen=True)
class Probe:
    """One prompt to decode: its kind, its case, what counts as a hit (``want``), the first
    token ids of the two answers its first-token score compares (``pair``, ``(better,
    worse)``), the two whole answers its full-target scores compare (``versus``), its cluster
    (``""``: the case's) and its group's label."""

    kind: str
    case_id: str
    prompt: str
    want: str = ""  # rewrite, paraphrase, alias, one_hop: the answer the output must start with
    pair: tuple[int, int] | None = None
    versus: tuple[str, str] | None = None
    cluster: str = ""
    group: str = ""


def first_token(tokenizer, prompt: str, target: str) -> int:
    """The first token of ``target`` as it follows ``prompt``."""
    return answer_positions(tokenizer, prompt, answer_text(target), "")[0][0]


def _pair(tokenizer, prompt: str, better: str, worse: str) -> tuple[int, int] | None:
    if not better.strip() or not worse.strip():
        return None
    a, b = first_token(tokenizer, prompt, better), first_token(tokenizer, prompt, worse)
    return None if a == b else (a, b)


def _versus(better: str, worse: str) -> tuple[str, str] | None:
    """The two whole answers to compare; ``None`` when one is empty or both are the same."""
    if not better.strip() or not worse.strip() or better.strip() == worse.strip():
        return None
    return (better, worse)


def bystander(case: EditCase, prompt: str) -> str:
    """The cluster of a neighbourhood prompt: its subject where it reads as the edit's template
    around a subject (CounterFact's neighbours share the relation's template), else the prompt.

    >>> case = EditCase("0", "Vinson Massif", "{} is located in", "Asia", "Antarctica")
    >>> bystander(case, "Mount Erebus is located in"), bystander(case, "Erebus lies in")
    ('bystander Mount Erebus', 'bystander Erebus lies in')
    """
    head, tail = case.prompt.format("\x00").split("\x00", 1)
    if len(prompt) > len(head) + len(tail) and prompt.startswith(head) and prompt.endswith(tail):
        return "bystander " + prompt[len(head) : len(prompt) - len(tail)].strip()
    return "bystander " + prompt


def probes(tokenizer, group: Group) -> list[Probe]:
    """Every prompt ``group`` is scored on: per scored edit its rewrite, paraphrases,
    neighbours, relation probes and portability probes, then the generic prompts."""
    out: list[Probe] = []
    label = group.label
    for row in group.scored:
        c = group.edits[row]
        new, true = c.target_new, c.target_true
        for kind, prompts in (("rewrite", [c.rewrite]), ("paraphrase", list(c.paraphrases))):
            out.extend(
                Probe(
                    kind,
                    c.case_id,
                    p,
                    new,
                    _pair(tokenizer, p, new, true),
                    _versus(new, true),
                    group=label,
                )
                for p in prompts
            )
        out.extend(
            Probe(
                "neighbour",
                c.case_id,
                n.prompt,
                "",
                _pair(tokenizer, n.prompt, n.answer, new),
                _versus(n.answer, new),
                bystander(c, n.prompt),
                label,
            )
            for n in c.neighbourhood
        )
        out.extend(Probe("relation", c.case_id, r.prompt, group=label) for r in c.relation_probes)
        out.extend(Probe(q.kind, c.case_id, q.prompt, q.answer, group=label) for q in c.portability)
    out.extend(
        Probe("unrelated", "", p, cluster=f"prompt {p}", group=label) for p in group.unrelated
    )
    return out


def max_tokens(tokenizer, cases: Sequence[EditCase]) -> int:
    """The longest wanted or compared answer (new, true, portability) in tokens, plus 2: enough
    greedy steps for every answer and the token after it (the word boundary)."""
    answers = [
        (prompt, t)
        for c in cases
        for prompt, t in (
            (c.rewrite, c.target_new),
            (c.rewrite, c.target_true),
            *((q.prompt, q.answer) for q in c.portability),
        )
        if t.strip()
    ]
    longest = max(len(answer_positions(tokenizer, p, answer_text(t), "")[0]) for p, t in answers)
    return longest + 2
