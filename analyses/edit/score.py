"""Scoring held edits the same way for every method: greedy generation, and teacher-forced
whole-target probabilities.

For a group of edits held at once, every distinct probe prompt is decoded greedily through the
method's prompt rewrite and hooks (:class:`analyses.edit.method.Held`), in one
:func:`fmi.core.generate.decode` call, and judged (:func:`judge`):

- rewrite, paraphrase, ``alias`` and ``one_hop`` prompts: the output starts with the wanted
  answer (``target_new``; a portability probe's own), word-bounded
  (:func:`fmi.experiments.metrics.text_matches`);
- neighbourhood and ``relation`` prompts: the new tokens equal the unedited model's;
- generic prompts (``unrelated``): the new tokens differ from the unedited model's.

Then, for every probe with two answers to compare (rewrite and paraphrase: ``target_new`` over
``target_true``; a neighbour with a known answer: that answer over ``target_new``), both whole
targets are teacher-forced after the prompt under the same hooks
(:func:`analyses.edit.probability.target_logprobs`): their first tokens give the first-token
scores, their per-token means ROME's ES / PS / NS and magnitudes. The metrics, their trial
keys, clusters and intervals are :mod:`analyses.edit.rates`', the groups and probes
:mod:`analyses.edit.plan`'s (re-exported here), the failure log :mod:`analyses.edit.failures`'.

>>> outcomes = [Outcome("rewrite", "0", hit=True, margin=1.5, prompt="A is in"),
...             Outcome("rewrite", "1", hit=False, margin=-0.5, prompt="B is in")]
>>> summary(outcomes)["efficacy"], summary(outcomes)["rewrite_score"]
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from analyses.edit.method import Held
from analyses.edit.plan import Group, Probe, bystander, first_token, groups, max_tokens, probes
from analyses.edit.probability import mean_logprob, target_logprobs
from analyses.edit.rates import (
    FIRST_TOKEN,
    GREEDY,
    KINDS,
    METRIC_LABELS,
    METRICS,
    WANTS_ANSWER,
    Outcome,
    summary,
)
from fmi.core.generate import decode
from fmi.experiments.metrics import text_matches

__all__ = [
    "KINDS",
    "METRICS",
    "METRIC_LABELS",
    "Group",
    "Outcome",
    "Probe",
    "bystander",
    "first_token",
    "groups",
    "max_tokens",
    "probes",
    "summary",
]

RATE_OF = GREEDY
SCORE_OF = FIRST_TOKEN


def judge(
    probe: Probe,
    output: str,
    tokens: tuple[int, ...],
    base: tuple[int, ...] | None,
    margin: float | None,
    *,
    full: tuple[float, float] | None = None,
    expected: str | None = None,
) -> Outcome:
    """The :class:`Outcome` of ``probe`` given its decoded ``output`` text and new ``tokens``,
    the unedited model's new tokens ``base`` (needed by neighbourhood, relation and generic
    prompts), its first-token ``margin`` and whole-target mean log-probabilities ``full``;
    ``expected`` (for the failure log) defaults to the wanted answer.

    >>> p = Probe("rewrite", "0", "Rome is in", "Italy")
    >>> judge(p, " Italy, a", (1, 2), None, None).hit, judge(p, " Italyn", (3,), None, None).hit
    (True, False)
    >>> n = Probe("neighbour", "0", "Paris is in")
    >>> judge(n, "", (4, 5), (4, 5), None).hit, judge(n, "", (4, 6), (4, 5), None).hit
    (True, False)
    >>> judge(Probe("unrelated", "", "Hi"), "", (4, 6), (4, 5), None).hit
    True
    """
    if probe.kind not in GREEDY:
        raise ValueError(f"unknown probe kind {probe.kind!r}; kinds are {', '.join(KINDS)}")
    if probe.kind in WANTS_ANSWER:
        hit = text_matches(output, probe.want)
    elif base is None:
        raise ValueError(f"a {probe.kind} probe needs the unedited model's output")
    elif probe.kind in ("neighbour", "relation"):
        hit = tokens == base
    else:
        hit = tokens != base
    return Outcome(
        probe.kind,
        probe.case_id,
        hit,
        margin,
        output,
        prompt=probe.prompt,
        group=probe.group,
        cluster=probe.cluster,
        target=probe.want if probe.kind in WANTS_ANSWER else "",
        versus=probe.versus,
        full=full,
        expected=probe.want if expected is None else expected,
    )


def score_group(
    model,
    held: Held,
    found: list[Probe],
    base: dict[str, tuple[int, ...]] | None,
    *,
    max_new_tokens: int,
    batch_size: int,
    probabilities: bool | None = None,
) -> tuple[list[Outcome], dict[str, tuple[int, ...]]]:
    """Decode ``found``'s distinct prompts under ``held``, teacher-force their answers
    (``probabilities``; default: unless ``base`` is ``None``) and judge each probe; also return
    every prompt's new tokens (the unedited run's are ``base`` for the others; ``None``: this is
    the unedited run, judged against itself). A failing probe's outcome carries
    ``held.explain`` of its prompt (the prompt before ``held.prompts``' rewrite)."""
    tok = model.tokenizer
    prompts = list(dict.fromkeys(p.prompt for p in found))
    got = _decode(model, held, prompts, max_new_tokens, batch_size)
    tokens = dict(zip(prompts, got.tokens, strict=True))
    reference = base if base is not None else tokens
    forced: dict[tuple[str, str], list[float]] = {}
    if probabilities if probabilities is not None else base is not None:
        pairs = list(dict.fromkeys((p.prompt, t) for p in found if p.versus for t in p.versus))
        if pairs:
            lps = target_logprobs(
                model, held, [a for a, _ in pairs], [b for _, b in pairs], batch_size=batch_size
            )
            forced = dict(zip(pairs, lps, strict=True))
    texts = {p: tok.decode(list(t), skip_special_tokens=True) for p, t in tokens.items()}
    outcomes = []
    for p in found:
        full = margin = None
        if p.versus and forced:
            better, worse = forced[(p.prompt, p.versus[0])], forced[(p.prompt, p.versus[1])]
            full = (mean_logprob(better), mean_logprob(worse))
            margin = better[0] - worse[0] if p.pair else None
        was = reference.get(p.prompt)
        expected = None
        if p.kind not in WANTS_ANSWER and was is not None:
            expected = tok.decode(list(was), skip_special_tokens=True)
        outcome = judge(p, texts[p.prompt], tokens[p.prompt], was, margin, full=full)
        outcomes.append(outcome if expected is None else replace(outcome, expected=expected))
    return _explained(held, outcomes), tokens


def _decode(model, held: Held, prompts: list[str], max_new_tokens: int, batch_size: int):
    """Greedy decoding of ``held.prompts(prompts)``; a held ``prefix`` (in-context's stated
    facts) runs once, its keys and values reused
    (:func:`analyses.edit.prefix_cache.decode_with_prefix`: the same tokens)."""
    prefix = getattr(held, "prefix", "")
    if prefix:
        from analyses.edit.prefix_cache import decode_with_prefix

        return decode_with_prefix(
            model,
            prompts,
            held.hooks_for,
            prefix=prefix,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
    return decode(
        model,
        held.prompts(prompts),
        held.hooks_for,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


def _explained(held: Held, outcomes: list[Outcome]) -> list[Outcome]:
    """``outcomes`` with ``held.explain`` of each failing prompt (one call for all)."""
    failing = list(dict.fromkeys(o.prompt for o in outcomes if o.failed))
    if not failing:
        return outcomes
    info = held.explain(failing)
    if len(info) != len(failing):
        raise ValueError(f"explain gave {len(info)} entries for {len(failing)} prompts")
    by = dict(zip(failing, info, strict=True))
    return [replace(o, explain=by[o.prompt]) if o.failed else o for o in outcomes]


def cases_scored(outcomes: Sequence[Outcome]) -> int:
    """How many distinct edits ``outcomes`` scored (by their rewrite probes)."""
    return len({o.case_id for o in outcomes if o.kind == "rewrite"})
