"""The editing benchmark's metrics: what each probe's outcome counts towards, each trial counted
once, with cluster intervals.

Greedy rates (the probe's greedy output, :mod:`analyses.edit.score`), their JSON keys kept from
before; :data:`METRIC_LABELS` names them "(greedy)" in the tables:

- ``efficacy``, ``generalization``, ``portability_alias``, ``portability_one_hop``: the output
  starts with the wanted answer (``target_new``; a portability probe's own answer),
  word-bounded, over rewrite, paraphrase, ``alias`` and ``one_hop`` prompts;
- ``specificity`` (other subjects, the neighbourhood) and ``relation_specificity`` (the same
  subject under other relations, KnowEdit's ``Relation_Specificity``): the new tokens equal the
  unedited model's;
- ``unrelated_changed``: a generic prompt's new tokens differ from the unedited model's.

Probability scores, each over the probes with two different answers to compare (``better``
should beat ``worse``: ``target_new`` over ``target_true`` for rewrite and paraphrase prompts,
a neighbour's own answer over ``target_new``):

- first token (the keys of before): ``rewrite_score``, ``paraphrase_score``,
  ``neighbourhood_score`` count ``log P(better) > log P(worse)`` on the answers' first token (a
  pair starting with the same token is left out);
- whole target, ROME's (Meng et al. 2022, CounterFact): ``es``, ``ps``, ``ns`` count
  ``mean log P(better) > mean log P(worse)``, the mean over the target's tokens, teacher-forced
  after the prompt under the method (:func:`analyses.edit.probability.target_logprobs`), as
  ROME's ``test_batch_prediction`` compares the per-token mean NLL and its ``summarize.py``
  counts ``target_true > target_new`` (NLL) for rewrite and paraphrase prompts and the reverse
  for neighbourhood prompts; ``em``, ``pm``, ``nm`` are ROME's magnitudes, the mean of
  ``exp(mean log P(better)) - exp(mean log P(worse))``. ROME averages per case first; here every
  distinct trial weighs the same (the two agree when every case has as many prompts).

Trials and clusters. The same prompt judged on the same held state gives the same output, so it
is one trial however many edits list it: a greedy trial is ``(group, kind, prompt, wanted
answer)``, a probability trial ``(group, kind, prompt, better, worse)``; ``group`` names the
seed and the group of held edits (at T >= scored, one group: every edit's copy of a shared
neighbour prompt is one trial). A trial's duplicates must agree (else ``ValueError``). Trials
cluster by edit (``edit <case_id>``: its rewrite, paraphrases, relation and portability
prompts), by bystander for neighbourhood prompts (``bystander <subject>``, the prompt's subject
under the edit's template), and by prompt for generic prompts. Each 0/1 rate reports
``<metric>_ci``, the hull of a cluster bootstrap (2,000 resamples, seed 0) and Wilson at
``n / deff`` (:func:`fmi.experiments.intervals.cluster_rate`; never zero-width for n >= 1),
``<metric>_n`` (distinct trials) and ``<metric>_clusters``; a magnitude's ``_ci`` is the
cluster bootstrap's percentile interval (``None`` under two clusters).

>>> outs = [Outcome("rewrite", "0", True, prompt="A is in"),
...         Outcome("rewrite", "1", False, prompt="B is in")]
>>> s = summary(outs)
>>> s["efficacy"], s["efficacy_n"], s["efficacy_clusters"]
(0.5, 2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fmi.experiments.intervals import cluster_mean, cluster_rate

GREEDY = {
    "rewrite": "efficacy",
    "paraphrase": "generalization",
    "neighbour": "specificity",
    "relation": "relation_specificity",
    "alias": "portability_alias",
    "one_hop": "portability_one_hop",
    "unrelated": "unrelated_changed",
}
"""Probe kind -> its greedy rate."""
FIRST_TOKEN = {
    "rewrite": "rewrite_score",
    "paraphrase": "paraphrase_score",
    "neighbour": "neighbourhood_score",
}
FULL_TARGET = {"rewrite": "es", "paraphrase": "ps", "neighbour": "ns"}
MAGNITUDE = {"rewrite": "em", "paraphrase": "pm", "neighbour": "nm"}
KINDS = tuple(GREEDY)
WANTS_ANSWER = ("rewrite", "paraphrase", "alias", "one_hop")
"""Kinds judged by their output's text against a wanted answer (the rest against the unedited
model's tokens)."""
RATES = (*GREEDY.values(), *FIRST_TOKEN.values(), *FULL_TARGET.values())
MAGNITUDES = tuple(MAGNITUDE.values())
METRICS = (*RATES, *MAGNITUDES)
METRIC_LABELS = {
    "efficacy": "efficacy (greedy)",
    "generalization": "generalization (greedy)",
    "specificity": "specificity (greedy)",
    "relation_specificity": "relation specificity (greedy)",
    "portability_alias": "alias portability (greedy)",
    "portability_one_hop": "one-hop portability (greedy)",
    "unrelated_changed": "unrelated changed (greedy)",
    "rewrite_score": "rewrite (first token)",
    "paraphrase_score": "paraphrase (first token)",
    "neighbourhood_score": "neighbourhood (first token)",
    "es": "ES (full target)",
    "ps": "PS (full target)",
    "ns": "NS (full target)",
    "em": "EM (full target)",
    "pm": "PM (full target)",
    "nm": "NM (full target)",
}
"""Every metric's table label: how it is measured in brackets."""
N_BOOT = 2000


@dataclass(frozen=True)
class Outcome:
    """A probe's result: ``hit`` for its greedy rate (unrelated: the output changed), the
    first-token log-probability margin ``better - worse`` (``None``: no first-token score), and
    ``full``, the mean per-token log-probabilities of the whole ``(better, worse)`` targets
    (``None``: none). ``prompt``, ``group``, ``target`` (the wanted answer) and ``versus``
    (``(better, worse)``) make its trial keys; ``cluster`` is ``""`` for the case's own
    (``edit <case_id>``). ``expected`` (the wanted answer, or the unedited output) and
    ``explain`` (what the method retrieved) are for the failure log."""

    kind: str
    case_id: str
    hit: bool
    margin: float | None = None
    output: str = ""
    prompt: str = ""
    group: str = ""
    cluster: str = ""
    target: str = ""
    versus: tuple[str, str] | None = None
    full: tuple[float, float] | None = None
    expected: str = ""
    explain: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """Whether the probe fails its greedy judgement (a generic prompt: it changed).

        >>> Outcome("unrelated", "", True).failed, Outcome("rewrite", "0", True).failed
        (True, False)
        """
        return self.hit if self.kind == "unrelated" else not self.hit

    @property
    def greedy_key(self) -> tuple[str, ...]:
        """The greedy trial: ``(group, kind, prompt, wanted answer)``."""
        return (self.group, self.kind, self.prompt, self.target)

    @property
    def score_key(self) -> tuple[Any, ...]:
        """The probability trial: ``(group, kind, prompt, (better, worse))``."""
        return (self.group, self.kind, self.prompt, self.versus)

    @property
    def cluster_of(self) -> str:
        """The cluster: ``cluster``, else the case (``edit <case_id>``), else the prompt."""
        if self.cluster:
            return self.cluster
        return f"edit {self.case_id}" if self.case_id else f"prompt {self.prompt}"


def trials(outcomes: Sequence[Outcome]) -> dict[str, dict[tuple, tuple[float, str]]]:
    """Per metric, each distinct trial's value (0/1, or a magnitude) and cluster.

    >>> a = Outcome("neighbour", "0", True, prompt="P is in", cluster="bystander P")
    >>> b = Outcome("neighbour", "1", True, prompt="P is in", cluster="bystander P")
    >>> list(trials([a, b])["specificity"].values())
    [(1.0, 'bystander P')]
    """
    found: dict[str, dict[tuple, tuple[float, str]]] = {}

    def add(metric: str, key: tuple, value: float, o: Outcome) -> None:
        seen = found.setdefault(metric, {})
        if key in seen:
            if seen[key][0] != value:
                raise ValueError(
                    f"{metric}: trial {key!r} judged twice with different results "
                    f"({seen[key][0]} and {value}); give each scoring run its own group"
                )
            return
        seen[key] = (value, o.cluster_of)

    for o in outcomes:
        if o.kind not in GREEDY:
            raise ValueError(f"unknown probe kind {o.kind!r}; kinds are {', '.join(KINDS)}")
        add(GREEDY[o.kind], o.greedy_key, float(o.hit), o)
        if o.margin is not None and o.kind in FIRST_TOKEN:
            add(FIRST_TOKEN[o.kind], o.score_key, float(o.margin > 0), o)
        if o.full is not None and o.kind in FULL_TARGET:
            better, worse = o.full
            add(FULL_TARGET[o.kind], o.score_key, float(better > worse), o)
            add(MAGNITUDE[o.kind], o.score_key, math.exp(better) - math.exp(worse), o)
    return found


def summary(
    outcomes: Sequence[Outcome], n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, float | int | list[float] | None]:
    """Every metric of :data:`METRICS` over the distinct trials of ``outcomes``: the value,
    ``<metric>_ci`` (see the module), ``<metric>_n`` and ``<metric>_clusters`` (``None``, 0 and
    0 without a trial).

    >>> s = summary([Outcome("neighbour", "0", True, -0.2, prompt="P"),
    ...              Outcome("neighbour", "1", True, prompt="Q")])
    >>> s["specificity"], s["specificity_n"], s["neighbourhood_score"], s["neighbourhood_score_n"]
    (1.0, 2, 0.0, 1)
    >>> s["efficacy"] is None and s["efficacy_n"] == 0 and s["efficacy_ci"] is None
    True
    """
    found = trials(outcomes)
    out: dict[str, float | int | list[float] | None] = {}
    for metric in METRICS:
        got = list(found.get(metric, {}).values())
        values = [v for v, _ in got]
        clusters = [c for _, c in got]
        out[metric], out[f"{metric}_ci"] = None, None
        out[f"{metric}_n"], out[f"{metric}_clusters"] = len(got), len(set(clusters))
        if not got:
            continue
        if metric in MAGNITUDES:
            mean, ci = cluster_mean(values, clusters, n_boot, seed)
            out[metric], out[f"{metric}_ci"] = mean, list(ci) if ci else None
        else:
            rate = cluster_rate(values, clusters, n_boot, seed)
            assert rate is not None
            out[metric], out[f"{metric}_ci"] = rate.rate, list(rate.ci)
    return out
