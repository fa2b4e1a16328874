"""Relation geometry: where in the residual stream a fact's paraphrase parts from the same
subject's other facts and from look-alike names, per layer and key site.

An editing memory must fire on the same fact in other words and stay silent on the edited
subject under another relation ("Kenya" edited for its capital, asked its official language)
and on another subject whose name shares tokens ("Windows 7" and "Windows Media Player"). For
each of known-cf's *training* edits (no evaluation edit is looked at), the anchor is the
rewrite prompt and the others are

- ``paraphrase``: the same fact in the relation's other phrasings (must fire);
- ``other_relation``: the same subject under another relation (the relation-specificity
  prompts; must not);
- ``look_alike``: the edit's own template with another known-cf subject sharing the subject's
  first word (must not).

At each layer's ``hook_resid_post``, and after the blocks at the final norm's output
(``ln_final.hook_out``, shown as layer ``n_layers``: the memory's relation key, the state its
value is added to), two key sites are read: the subject's last token (``subject_last``, ROME's
k*) and the prompt's last token (``prompt_last``, where the relation is read). Vectors are
standardized per layer and site over this analysis' prompts. Two measures, both with intervals:

- the AUC of ``cos(anchor, paraphrase)`` against ``cos(anchor, negative)``, per negative kind
  (1: a threshold on the cosine alone separates them; stratified bootstrap, 95%);
- a linear probe's held-out accuracy (paraphrase against either negative) on the product of
  the two standardized vectors, 5-fold and grouped by edit, so no edit is in both parts
  (95% Wilson; :func:`analyses.probing.probe_accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analyses.edit.bundled.files import load_bundled
from analyses.edit.cases import EditCase
from analyses.prepare import Setup
from analyses.probing import auc, bootstrap_auc, probe_accuracy
from fmi.core.forward import collect
from fmi.core.prompts import span_tokens
from fmi.core.sites import UNEMBED_IN, resid
from fmi.memory.keys import Standardizer
from fmi.memory.relation_train import look_alikes as subject_look_alikes

NAME = "relation_geometry"
TITLE = "Relation geometry: paraphrase vs the subject's other facts and look-alike names"
SITES = ("subject_last", "prompt_last")
KINDS = ("paraphrase", "other_relation", "look_alike")
NEGATIVES = ("other_relation", "look_alike")
MAX_CASES = 120  # training edits visited (known-cf has 215)
PER_KIND = 2  # prompts of each kind per edit
FOLDS = 5


@dataclass(frozen=True)
class Pair:
    """An anchor prompt and another prompt of one kind, by index into the prompt list."""

    case: int
    kind: str
    anchor: int
    other: int


@dataclass(frozen=True)
class PromptSet:
    """Distinct prompts, the subject named in each (for ``subject_last``), and the pairs."""

    prompts: list[str]
    subjects: list[str]
    pairs: list[Pair]


def look_alikes(cases: Sequence[EditCase], subjects: Sequence[str], limit: int) -> list[list[str]]:
    """Per case, up to ``limit`` other subjects (of ``subjects``, sorted) whose first word is
    the case subject's and which are not the subject itself
    (:func:`fmi.memory.relation_train.look_alikes`).

    >>> cs = [EditCase("0", "Windows 7", "{} was made by", "Apple", "Microsoft")]
    >>> look_alikes(cs, ["Windows Media Player", "Windows 7", "Linux", "Windows XP"], 1)
    [['Windows Media Player']]
    """
    return subject_look_alikes([c.subject for c in cases], subjects, limit)


def prompt_set(cases: Sequence[EditCase], per_kind: int = PER_KIND) -> PromptSet:
    """The anchors, paraphrases, other-relation and look-alike prompts of ``cases``, each
    prompt once. A prompt that does not contain its subject is left out.

    >>> cs = [EditCase("0", "Windows 7", "{} was made by", "Apple", "Microsoft",
    ...                paraphrases=("Windows 7 is a product of",)),
    ...       EditCase("1", "Windows XP", "{} is from", "Apple", "Microsoft")]
    >>> ps = prompt_set(cs)
    >>> ps.prompts[2:]
    ['Windows XP was made by', 'Windows XP is from', 'Windows 7 is from']
    >>> [(p.case, p.kind, p.anchor, p.other) for p in ps.pairs]
    [(0, 'paraphrase', 0, 1), (0, 'look_alike', 0, 2), (1, 'look_alike', 3, 4)]
    """
    prompts: list[str] = []
    subjects: list[str] = []
    index: dict[tuple[str, str], int] = {}

    def add(text: str, subject: str) -> int | None:
        if subject not in text:
            return None
        if (text, subject) not in index:
            index[(text, subject)] = len(prompts)
            prompts.append(text)
            subjects.append(subject)
        return index[(text, subject)]

    alikes = look_alikes(cases, [c.subject for c in cases], per_kind)
    pairs: list[Pair] = []
    for i, case in enumerate(cases):
        anchor = add(case.rewrite, case.subject)
        if anchor is None:
            continue
        others = {
            "paraphrase": [(p, case.subject) for p in case.paraphrases[:per_kind]],
            "other_relation": [(p.prompt, case.subject) for p in case.relation_probes[:per_kind]],
            "look_alike": [(case.prompt.format(s), s) for s in alikes[i]],
        }
        for kind in KINDS:
            for text, subject in others[kind]:
                j = add(text, subject)
                if j is not None:
                    pairs.append(Pair(i, kind, anchor, j))
    return PromptSet(prompts, subjects, pairs)


def site_rows(tokenizer, prompts: Sequence[str], subjects: Sequence[str]) -> dict[str, list[int]]:
    """Per site, each prompt's unpadded token index: the subject's last token (its first
    occurrence) and the last token."""
    sub = []
    for text, subject in zip(prompts, subjects, strict=True):
        at = text.find(subject)
        sub.append(span_tokens(tokenizer, text, (at, at + len(subject)))[-1])
    return {"subject_last": sub, "prompt_last": [-1] * len(prompts)}


def pair_cosines(vectors: Tensor, pairs: Sequence[Pair]) -> Tensor:
    """``cos(vectors[anchor], vectors[other])`` of every pair.

    >>> v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    >>> pair_cosines(v, [Pair(0, "paraphrase", 0, 2), Pair(0, "look_alike", 0, 1)]).tolist()
    [1.0, 0.0]
    """
    a = torch.stack([vectors[p.anchor] for p in pairs])
    b = torch.stack([vectors[p.other] for p in pairs])
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def separation(cos: Tensor, kinds: Sequence[str], negative: str, seed: int) -> list[float]:
    """``[AUC, low, high]``: paraphrase cosines ranked above ``negative`` ones, with a 95%
    stratified bootstrap interval.

    >>> cos = torch.tensor([0.9, 0.8, 0.1, 0.85])
    >>> kinds = ["paraphrase", "paraphrase", "look_alike", "look_alike"]
    >>> separation(cos, kinds, "look_alike", 0)[0]   # 3 of the 4 (paraphrase, negative) pairs
    0.75
    """
    keep = [i for i, k in enumerate(kinds) if k in ("paraphrase", negative)]
    scores = cos[keep].double().numpy()
    y = np.array([int(kinds[i] == "paraphrase") for i in keep])
    boots = bootstrap_auc(scores, y, seed=seed, n_boot=500)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return [auc(scores, y), float(lo), float(hi)]


@dataclass(frozen=True)
class RelationGeometryData:
    layers: list[int]
    sites: list[str]
    negatives: list[str]
    counts: dict[str, int]  # pairs of each kind
    edits: int  # training edits visited
    # site -> negative -> per layer [AUC, low, high]
    auc: dict[str, dict[str, list[list[float]]]]
    # site -> per layer [accuracy, low, high]; the majority-class rate
    probe: dict[str, list[list[float]]]
    probe_chance: float
    # the best site and layer (highest worse-of-the-two AUC) and its cosines per kind
    best: dict[str, Any]
    examples: list[list[str]]  # [anchor, look-alike] prompt pairs, for the reader

    def to_dict(self) -> dict:
        return asdict(self)


def compute(setup: Setup, *, progress: bool = True) -> RelationGeometryData:
    """Read both sites at every key layer and at the final norm for known-cf's first
    ``MAX_CASES`` training edits."""
    model = setup.model
    train, _ = load_bundled("known-cf")
    cases = train[:MAX_CASES]
    ps = prompt_set(cases)
    layers = [*setup.key_layers(), int(model.bridge.cfg.n_layers)]  # the last: the final norm
    sites = [*(resid(layer) for layer in layers[:-1]), UNEMBED_IN]
    got = collect(model.bridge, model.tokenizer, ps.prompts, sites)
    rows = site_rows(model.tokenizer, ps.prompts, ps.subjects)
    kinds = [p.kind for p in ps.pairs]
    labels = np.array([int(k == "paraphrase") for k in kinds])
    groups = np.array([p.case for p in ps.pairs])
    out_auc: dict[str, dict[str, list[list[float]]]] = {
        s: {n: [] for n in NEGATIVES} for s in SITES
    }
    out_probe: dict[str, list[list[float]]] = {s: [] for s in SITES}
    cosines: dict[tuple[str, int], Tensor] = {}
    chance = float(max(labels.mean(), 1 - labels.mean()))  # the majority-class rate
    for layer, site in zip(layers, sites, strict=True):
        for name in SITES:
            vectors = got.stack_at(site, rows[name]).float()
            z = Standardizer.fit(vectors)(vectors)
            cos = pair_cosines(z, ps.pairs)
            cosines[(name, layer)] = cos
            for neg in NEGATIVES:
                out_auc[name][neg].append(separation(cos, kinds, neg, setup.cfg.seed))
            features = torch.stack([z[p.anchor] * z[p.other] for p in ps.pairs])
            res = probe_accuracy(features, labels, groups, folds=FOLDS, seed=setup.cfg.seed)
            out_probe[name].append([res.accuracy, res.ci_low, res.ci_high])
    best_name, best_layer = max(
        ((n, layer) for n in SITES for layer in layers),
        key=lambda k: min(out_auc[k[0]][neg][layers.index(k[1])][0] for neg in NEGATIVES),
    )
    cos = cosines[(best_name, best_layer)]
    best = {
        "site": best_name,
        "layer": best_layer,
        "cosines": {
            k: [float(c) for c, kk in zip(cos, kinds, strict=True) if kk == k] for k in KINDS
        },
    }
    counts = {k: kinds.count(k) for k in KINDS}
    examples = [
        [ps.prompts[p.anchor], ps.prompts[p.other]] for p in ps.pairs if p.kind == "look_alike"
    ][:5]
    return RelationGeometryData(
        layers,
        list(SITES),
        list(NEGATIVES),
        counts,
        len(cases),
        out_auc,
        out_probe,
        chance,
        best,
        examples,
    )
