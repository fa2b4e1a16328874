"""Which key knows the relation: candidate read rules for an editing memory, fitted on the
training edits and measured as retrieval on the evaluation edits.

Every edit is an entry keyed by its rewrite prompt. Four similarity features score a query
prompt against an entry, each on residual states standardized with training statistics:

- ``symbol``: MaxSim of the query's content tokens against the entry's subject tokens, at the
  memory's token site (today's symbol channel);
- ``context``: the same against the entry's other tokens (today's context channel);
- ``subject``: the best cosine of a query token with the entry's subject-last token at a middle
  layer (ROME's k*, the memory's single-vector symbol key);
- ``relation``: the cosine of the query's last token with the entry's last token at a chosen
  layer (where the relation is read), either as they are (``raw``), in a relation space
  (``lda``: the discriminant directions of the training edits' relation labels,
  :func:`relation_space`), or as a learned diagonal bilinear score (``metric``:
  ``w . (q * e) + b``, a logistic regression on training pairs of the same relation against
  the same subject under another relation, :func:`relation_metric`).

A candidate is a set of terms (a feature or a product of two), combined by a balanced logistic
regression on training (query, entry) pairs, and a threshold (Youden's J on the best score:
queries that must fire their own entry against those that must fire none). ``contrastive``
candidates also see the training edits' relation probes and look-alike prompts as negatives;
the others only the neighbourhood and generic prompts, as the editing memory is fitted today.

On the evaluation edits, all held at once, a query *fires right* when its best entry is one that
states it and scores above the threshold, and *fires wrong* when its best entry is any other
and scores above it (a negative query states no entry, so any fire is wrong).

>>> terms_of("subject*relation")
(('subject',), ('relation',), ('subject', 'relation'))
>>> design(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]), terms_of("symbol*context"))[0, 0].tolist()
[1.0, 2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from analyses.edit.cases import EditCase
from analyses.edit.fast import youden_threshold
from analyses.relation_geometry.compute import look_alikes
from fmi.core.forward import collect
from fmi.core.prompts import span_tokens
from fmi.core.sites import resid
from fmi.experiments.intervals import wilson
from fmi.memory.keys import Standardizer, maxsim, pad_queries

FEATURES = ("symbol", "context", "subject", "relation")
POSITIVE = ("rewrite", "paraphrase")
NEGATIVE = ("neighbourhood", "relation", "look_alike", "generic")
CONTRASTIVE_ONLY = ("relation", "look_alike")  # negatives today's fit never sees


def terms_of(spec: str) -> tuple[tuple[str, ...], ...]:
    """``"a*b"``: the terms a, b and a x b; ``"a+b"``: a and b; ``"a"``: a alone; several specs
    joined by ``","`` add their terms (each once, in order)."""
    out: list[tuple[str, ...]] = []
    for part in spec.split(","):
        names = part.replace("*", "+").split("+")
        bad = [n for n in names if n not in FEATURES]
        if bad:
            raise ValueError(f"unknown feature(s) {bad}; features are {FEATURES}")
        got = [(n,) for n in names] + ([tuple(names)] if "*" in part else [])
        out += [t for t in got if t not in out]
    return tuple(out)


def design(feats: Tensor, terms: Sequence[tuple[str, ...]]) -> Tensor:
    """``[..., len(terms)]``: each term (a product of features) of ``feats`` ``[..., 4]``."""
    cols = []
    for term in terms:
        col = feats[..., FEATURES.index(term[0])]
        for name in term[1:]:
            col = col * feats[..., FEATURES.index(name)]
        cols.append(col)
    return torch.stack(cols, dim=-1)


@dataclass(frozen=True)
class Query:
    prompt: str
    kind: str  # one of POSITIVE or NEGATIVE
    case: int  # the case it came from


def queries(cases: Sequence[EditCase], generic: Sequence[str], per_kind: int) -> list[Query]:
    """Each case's rewrite and paraphrases, up to ``per_kind`` neighbourhood, relation and
    look-alike prompts, and the generic prompts (case -1), each (prompt, kind) once.

    >>> cs = [EditCase("0", "Windows 7", "{} was made by", "Apple", "Microsoft",
    ...                paraphrases=("Windows 7 is a product of",)),
    ...       EditCase("1", "Windows XP", "{} was made by", "IBM", "Microsoft")]
    >>> [(q.kind, q.prompt) for q in queries(cs, ["Hello"], 2)][:4]
    [('rewrite', 'Windows 7 was made by'), ('paraphrase', 'Windows 7 is a product of'), \
('look_alike', 'Windows XP was made by'), ('rewrite', 'Windows XP was made by')]
    """
    alikes = look_alikes(cases, [c.subject for c in cases], per_kind)
    out: list[Query] = []
    seen: set[tuple[str, str]] = set()

    def add(prompt: str, kind: str, case: int) -> None:
        if (prompt, kind) not in seen:
            seen.add((prompt, kind))
            out.append(Query(prompt, kind, case))

    for i, c in enumerate(cases):
        add(c.rewrite, "rewrite", i)
        for p in c.paraphrases:
            add(p, "paraphrase", i)
        for n in c.neighbourhood[:per_kind]:
            add(n.prompt, "neighbourhood", i)
        for r in c.relation_probes[:per_kind]:
            add(r.prompt, "relation", i)
        for s in alikes[i]:
            add(c.prompt.format(s), "look_alike", i)
    for g in generic:
        add(g, "generic", -1)
    return out


def stated_by(cases: Sequence[EditCase], qs: Sequence[Query]) -> Tensor:
    """``[queries, entries]`` bool: the entry states the query (it is the entry's rewrite or
    one of its paraphrases), whatever kind the query was drawn as."""
    owners: dict[str, set[int]] = {}
    for i, c in enumerate(cases):
        for p in (c.rewrite, *c.paraphrases):
            owners.setdefault(p, set()).add(i)
    out = torch.zeros(len(qs), len(cases), dtype=torch.bool)
    for q, query in enumerate(qs):
        for i in owners.get(query.prompt, ()):
            out[q, i] = True
    return out


@dataclass
class Sites:
    """The layers read: the memory's token site, the subject key's, and the relation keys'."""

    token: int
    subject: int
    relation: tuple[int, ...]

    def names(self) -> list[str]:
        layers = dict.fromkeys([self.token, self.subject, *self.relation])
        return [resid(layer) for layer in layers]


@dataclass
class States:
    """Per site, each prompt's content-token states (unpadded rows, content only)."""

    acts: dict[str, list[Tensor]] = field(default_factory=dict)


def read_states(model, prompts: Sequence[str], sites: Sites, batch_size: int = 32) -> States:
    got = collect(
        model.bridge, model.tokenizer, list(prompts), sites.names(), batch_size=batch_size
    )
    content = [c.bool() for c in got.content]
    return States({s: [a[c] for a, c in zip(got.acts[s], content, strict=True)] for s in got.acts})


def standardizers(states: States) -> dict[str, Standardizer]:
    """Per site, a :class:`fmi.memory.keys.Standardizer` over every content token given."""
    return {s: Standardizer.fit(torch.cat(rows).float()) for s, rows in states.acts.items()}


def _subject_rows(model, cases: Sequence[EditCase]) -> tuple[list[list[int]], list[list[int]]]:
    """Per case, the content-row indices of its rewrite's subject tokens and of the others (the
    tokenizer's special tokens dropped, as :func:`read_states` drops them)."""
    tok = model.tokenizer
    subj, rest = [], []
    for c in cases:
        text = c.rewrite
        at = text.find(c.subject)
        ids = tok(text)["input_ids"]
        special = set(tok.all_special_ids)
        keep = [i for i, t in enumerate(ids) if t not in special]
        where = {i: r for r, i in enumerate(keep)}
        s = [where[i] for i in span_tokens(tok, text, (at, at + len(c.subject))) if i in where]
        subj.append(s)
        rest.append([r for r in range(len(keep)) if r not in s])
    return subj, rest


@dataclass(frozen=True)
class RelationSpace:
    """An affine map of standardized last-token states: ``(x - mean) @ directions``."""

    mean: Tensor
    directions: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.directions


def relation_space(last: Tensor, labels: Sequence[str], seed: int = 0) -> RelationSpace:
    """The discriminant directions of ``labels`` (a relation per row of ``last``, standardized
    last-token states): shrinkage LDA (sklearn, eigen solver), every direction kept, centred
    on the rows' mean."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(last.double().numpy(), list(labels))
    k = max(1, len(set(labels)) - 1)
    directions = torch.tensor(lda.scalings_[:, :k], dtype=torch.float32)
    return RelationSpace(last.float().mean(0), directions)


@dataclass(frozen=True)
class RelationMetric:
    """A diagonal bilinear score of two standardized states: ``(q * w) . e + b``."""

    weight: Tensor
    bias: float

    def __call__(self, q: Tensor, e: Tensor) -> Tensor:
        """``[len(q), len(e)]``: every query row against every entry row."""
        return (q * self.weight) @ e.T + self.bias


def relation_metric(
    q: Tensor, e: Tensor, same: Sequence[bool], strength: float = 1.0
) -> RelationMetric:
    """The logistic regression (L2, ``C = strength``, balanced) of ``same`` (the pair states one
    relation) on the products ``q[i] * e[i]`` of standardized last-token states."""
    clf = LogisticRegression(C=strength, class_weight="balanced", max_iter=2000, random_state=0)
    clf.fit((q * e).double().numpy(), [int(x) for x in same])
    return RelationMetric(torch.tensor(clf.coef_[0], dtype=torch.float32), float(clf.intercept_[0]))


def metric_pairs(qs: Sequence[Query]) -> tuple[list[int], list[int], list[bool]]:
    """Training pairs for :func:`relation_metric`: each paraphrase and neighbourhood prompt with
    its case's entry (the same relation) and each relation probe with it (another relation)."""
    rows = [i for i, q in enumerate(qs) if q.kind in ("paraphrase", "neighbourhood", "relation")]
    return rows, [qs[i].case for i in rows], [qs[i].kind != "relation" for i in rows]


def last_states(states: States, stds: dict[str, Standardizer], layer: int) -> Tensor:
    """``[prompts, d]``: each prompt's last content token at ``layer``, standardized."""
    site = resid(layer)
    return torch.stack([stds[site](r[-1].float()) for r in states.acts[site]])


def features(
    model,
    cases: Sequence[EditCase],
    qs: Sequence[Query],
    states: States,
    stds: dict[str, Standardizer],
    sites: Sites,
    relation_layer: int,
    entry_states: States,
    space: RelationSpace | RelationMetric | None = None,
) -> Tensor:
    """``[queries, entries, 4]``: :data:`FEATURES` of every query against every case's entry.
    ``states`` are the queries' (in ``qs`` order), ``entry_states`` the rewrites'; ``space``
    maps the relation states before their cosine (None: as they are)."""
    tsite, usite = resid(sites.token), resid(sites.subject)
    subj, rest = _subject_rows(model, cases)
    n = len(cases)

    def std(site: str, rows: list[Tensor]) -> list[Tensor]:
        return [stds[site](r.float()) for r in rows]

    tq, tmask = pad_queries(std(tsite, states.acts[tsite]))
    te = std(tsite, entry_states.acts[tsite])
    out = []
    for rows in (subj, rest):
        keys = torch.cat([e[r] for e, r in zip(te, rows, strict=True)])
        owner = torch.tensor([i for i, r in enumerate(rows) for _ in r])
        out.append(maxsim(tq, tmask, keys, owner, n))
    uq, umask = pad_queries(std(usite, states.acts[usite]))
    ue = std(usite, entry_states.acts[usite])
    ukeys = torch.stack([e[r[-1]] for e, r in zip(ue, subj, strict=True)])
    out.append(maxsim(uq, umask, ukeys, torch.arange(n), n))
    rq = last_states(states, stds, relation_layer)
    re = last_states(entry_states, stds, relation_layer)
    if isinstance(space, RelationMetric):
        out.append(space(rq, re))
        return torch.stack(out, dim=-1)
    if space is not None:
        rq, re = space(rq), space(re)
    unit = torch.nn.functional.normalize
    out.append(unit(rq, dim=-1) @ unit(re, dim=-1).T)
    return torch.stack(out, dim=-1)


@dataclass(frozen=True)
class Rule:
    """A fitted candidate: its terms, logistic weights (bias last) and threshold."""

    terms: tuple[tuple[str, ...], ...]
    weights: tuple[float, ...]
    threshold: float

    def scores(self, feats: Tensor) -> Tensor:
        w = torch.tensor(self.weights, dtype=feats.dtype)
        return torch.sigmoid(design(feats, self.terms) @ w[:-1] + w[-1])


def fit_rule(
    feats: Tensor,
    stated: Tensor,
    kinds: Sequence[str],
    terms: tuple[tuple[str, ...], ...],
    contrastive: bool,
) -> Rule:
    """A balanced logistic regression on every (query, entry) pair (positive: the entry states
    the query), then Youden's threshold on each query's best score: right top-1 reads of the
    positive queries against the negative queries. Without ``contrastive`` the relation and
    look-alike queries are left out of both."""
    use = [i for i, k in enumerate(kinds) if contrastive or k not in CONTRASTIVE_ONLY]
    x = design(feats[use], terms).reshape(-1, len(terms)).double().numpy()
    y = stated[use].reshape(-1).numpy().astype(int)
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=0)
    clf.fit(x, y)
    rule = Rule(terms, (*map(float, clf.coef_[0]), float(clf.intercept_[0])), 0.0)
    best, idx = rule.scores(feats[use]).max(dim=1)
    right = stated[use][torch.arange(len(use)), idx]
    pos = [j for j, i in enumerate(use) if kinds[i] in POSITIVE and bool(right[j])]
    neg = [j for j, i in enumerate(use) if kinds[i] in NEGATIVE]
    threshold = youden_threshold(best[pos].numpy(), best[neg].numpy())
    return Rule(terms, rule.weights, threshold)


def rates(rule: Rule, feats: Tensor, stated: Tensor, kinds: Sequence[str]) -> dict[str, list]:
    """Per query kind ``[rate, low, high, n]`` (95% Wilson): positive kinds the fraction that
    fire right, negative kinds the fraction that fire no entry that does not state them."""
    best, idx = rule.scores(feats).max(dim=1)
    fired = best >= rule.threshold
    right = stated[torch.arange(len(kinds)), idx]
    out = {}
    for kind in (*POSITIVE, *NEGATIVE):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if not rows:
            continue
        ok = fired[rows] & right[rows] if kind in POSITIVE else ~(fired[rows] & ~right[rows])
        k = int(ok.sum())
        lo, hi = wilson(k, len(rows))
        out[kind] = [k / len(rows), lo, hi, len(rows)]
    return out


def own_quantiles(feats: Tensor, qs: Sequence[Query], kind: str, feature: str) -> list[float]:
    """The 10th, 50th and 90th percentiles of ``feature`` between each query of ``kind`` and
    its own case's entry.

    >>> f = torch.zeros(3, 1, 4); f[:, 0, 3] = torch.tensor([0.0, 0.5, 1.0])
    >>> own_quantiles(f, [Query("a", "paraphrase", 0)] * 3, "paraphrase", "relation")
    [0.1, 0.5, 0.9]
    """
    rows = [i for i, q in enumerate(qs) if q.kind == kind]
    own = torch.tensor([qs[i].case for i in rows])
    v = feats[rows, own, FEATURES.index(feature)].double()
    return [round(float(x), 4) for x in torch.quantile(v, torch.tensor([0.1, 0.5, 0.9]).double())]
