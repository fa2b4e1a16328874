"""Steering vectors computed the standard ways, per label, at residual sites: CAA and ActAdd.

*Mean difference / CAA* (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation
Addition"; the difference-of-means direction): for a label, the mean activation at the label
token over statements that end in that label, minus the mean over statements ending in any other
label. A statement is the write prompt with its label appended (``In game A, blicket means`` +
`` red``), so the label token is its last token.

*CAA at the answer position*: the same mean difference taken one token earlier, at the write
prompt's last token (``In game A, blicket means``), grouped by the label that follows it. That
state predicts the label rather than encoding it as input, so it is the variant aimed at making
the model *say* the label.

*ActAdd* (Turner et al. 2023, "Activation Addition: Steering Language Models Without
Optimization"): the activation difference of one prompt pair of equal token length, here at the
last token: ``"The answer is red"`` minus the neutral ``"The answer is the"``. Turner et al. pad
their pairs to equal length so that the difference lines up position by position; a pair that
tokenizes to different lengths is refused (``ConfigError``).

These vectors are reused as baselines elsewhere, so nothing here depends on the fitted memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.core.forward import collect
from fmi.errors import ConfigError

ACTADD_PREFIX = "The answer is"
ACTADD_NEUTRAL = " the"
CHUNK = 64  # prompts per collect call: full sequences are kept only for this many at a time


@torch.inference_mode()
def last_states(
    model, texts: Sequence[str], sites: Sequence[str], *, batch_size: int = 16
) -> Float[Tensor, "n s d"]:
    """Each text's activation at its last token, at every site (one frozen forward per batch)."""
    if not texts:
        raise ConfigError("last_states needs at least one text")
    out = []
    for start in range(0, len(texts), CHUNK):
        got = collect(
            model.bridge,
            model.tokenizer,
            list(texts[start : start + CHUNK]),
            list(sites),
            batch_size=batch_size,
        )
        out.append(torch.stack([got.stack_last(s) for s in sites], dim=1))
    return torch.cat(out)


def mean_difference(
    x: Float[Tensor, " n *feat"], groups: Int[Tensor, " n"], n_groups: int
) -> Float[Tensor, " k *feat"]:
    """Per group ``k``: the mean of its rows minus the mean of every other row (pooled).

    Vectorised: group sums with one ``index_add``; the others' mean is (total - own) / (n - n_k).
    Every group needs at least one row in it and one outside it.
    """
    if x.shape[0] != groups.shape[0]:
        raise ConfigError(f"{x.shape[0]} rows but {groups.shape[0]} group ids")
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= n_groups):
        raise ConfigError(f"group ids must lie in 0..{n_groups - 1}")
    counts = torch.bincount(groups, minlength=n_groups)
    n = x.shape[0]
    bad = [k for k in range(n_groups) if counts[k] == 0 or counts[k] == n]
    if bad:
        raise ConfigError(
            f"mean difference needs rows inside and outside every group; groups {bad} have "
            f"{[int(counts[k]) for k in bad]} of {n} rows"
        )
    flat = x.reshape(n, -1).double()
    groups = groups.to(flat.device)
    sums = torch.zeros(n_groups, flat.shape[1], dtype=flat.dtype, device=flat.device)
    sums = sums.index_add_(0, groups, flat)
    c = counts.to(flat.device, flat.dtype)[:, None]
    diff = sums / c - (flat.sum(0, keepdim=True) - sums) / (n - c)
    return diff.to(x.dtype).reshape(n_groups, *x.shape[1:])


def label_statements(templates, bindings) -> list[str]:
    """Each binding's write statement ending in its label: ``In game A, blicket means red``."""
    return [templates.prompt("write", b) + templates.target("write", b.label) for b in bindings]


def single_token(tokenizer, text: str) -> int:
    """The one token id of ``text`` (no special tokens); ``ConfigError`` if it is not one token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(f"{text!r} is not one token for this tokenizer: ids {ids}")
    return int(ids[0])


def _label_differences(
    model, texts, bindings, labels: Sequence[str], sites: Sequence[str], batch_size: int, how: str
) -> Float[Tensor, "k s d"]:
    """Last-token states of ``texts`` at ``sites``, mean difference per label of ``bindings``
    (every label present is a group), rows in the order of ``labels``."""
    present = list(dict.fromkeys(b.label for b in bindings))
    missing = [lab for lab in labels if lab not in present]
    if missing:
        raise ConfigError(f"no statement {how} label(s) {missing}; present: {present}")
    groups = torch.tensor([present.index(b.label) for b in bindings])
    states = last_states(model, texts, sites, batch_size=batch_size)
    diff = mean_difference(states, groups, len(present))
    return diff[[present.index(lab) for lab in labels]]


def caa_vectors(
    model,
    bindings,
    templates,
    labels: Sequence[str],
    sites: Sequence[str],
    *,
    batch_size: int = 16,
) -> Float[Tensor, "k s d"]:
    """Mean-difference (CAA) vectors of ``labels`` at ``sites`` from ``bindings``' statements.

    Every label in ``bindings`` is a group, so "other labels" includes labels not asked for.
    Each statement's last token must be its label's token (checked: a tokenizer that merges the
    label with what precedes it would move the position).
    """
    tok = model.tokenizer
    texts = label_statements(templates, bindings)
    for text, b in zip(texts, bindings, strict=True):
        want = single_token(tok, templates.target("write", b.label))
        if tok(text)["input_ids"][-1] != want:
            raise ConfigError(f"statement {text!r} does not end in the token of {b.label!r}")
    return _label_differences(model, texts, bindings, labels, sites, batch_size, "ends in")


def caa_answer_vectors(
    model,
    bindings,
    templates,
    labels: Sequence[str],
    sites: Sequence[str],
    *,
    batch_size: int = 16,
) -> Float[Tensor, "k s d"]:
    """Mean-difference vectors of ``labels`` at the answer position of ``bindings``' write
    prompts (the token before the label), grouped by the label that follows."""
    texts = [templates.prompt("write", b) for b in bindings]
    return _label_differences(model, texts, bindings, labels, sites, batch_size, "is followed by")


def actadd_pair(
    tokenizer, target: str, prefix: str = ACTADD_PREFIX, neutral: str = ACTADD_NEUTRAL
) -> tuple[str, str]:
    """``(prefix + target, prefix + neutral)``, e.g. ``("The answer is red", "The answer is
    the")``; ``ConfigError`` unless both tokenize to the same length."""
    pos, neg = prefix + target, prefix + neutral
    n_pos, n_neg = len(tokenizer(pos)["input_ids"]), len(tokenizer(neg)["input_ids"])
    if n_pos != n_neg:
        raise ConfigError(
            f"ActAdd pair must have equal token lengths: {pos!r} has {n_pos} tokens, "
            f"{neg!r} has {n_neg}"
        )
    return pos, neg


def actadd_vectors(
    model, targets: Sequence[str], sites: Sequence[str], *, batch_size: int = 16
) -> Float[Tensor, "k s d"]:
    """ActAdd vectors: last-token activation of ``prefix + target`` minus that of the neutral
    prompt, for each ``target`` (a label as it follows text, e.g. ``" red"``)."""
    if not targets:
        raise ConfigError("actadd_vectors needs at least one target")
    pairs = [actadd_pair(model.tokenizer, t) for t in targets]
    texts = [pos for pos, _ in pairs] + [pairs[0][1]]  # one neutral prompt serves every label
    states = last_states(model, texts, sites, batch_size=batch_size)
    return states[:-1] - states[-1:]
