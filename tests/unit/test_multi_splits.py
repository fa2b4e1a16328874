"""The multi-token built-in splits, and recall over answers of several tokens."""

from __future__ import annotations

import pytest

from fmi.errors import LabelError
from fmi.experiments.builtin_tasks import MULTI_CATEGORIES, MULTI_CONTEXTS, builtin_task
from fmi.experiments.config import RecallConfig
from fmi.experiments.labels import check_labels
from fmi.experiments.recall import run_recall


def test_multi_splits_follow_and_leave_the_other_splits_unchanged():
    plain = builtin_task(seed=3, n_train=5, n_eval=4)
    multi = builtin_task(seed=3, n_train=5, n_eval=4, multi=True)
    assert multi.train == plain.train and multi.splits[: len(plain.splits)] == plain.splits
    assert multi.split_names()[-2:] == tuple(MULTI_CONTEXTS)
    pools = {label for pool in MULTI_CATEGORIES for label in pool}
    for name, contexts in MULTI_CONTEXTS.items():
        split = multi.split(name)
        assert {b.context for b in split.bindings} == set(contexts)
        assert len(split.bindings) == 4 * len(contexts)  # every held-out symbol, every context
        by_symbol: dict[str, set[str]] = {}
        for b in split.bindings:
            assert b.label in pools
            by_symbol.setdefault(b.symbol, set()).add(b.label)
        assert all(len(labels) == len(contexts) for labels in by_symbol.values())  # conflicting
        assert set(by_symbol) == {b.symbol for b in plain.split("same").bindings}


def test_multi_token_labels_pass_only_with_answer_sequences(tiny_neox):
    task = builtin_task(seed=0, n_train=3, n_eval=3, multi=True)
    with pytest.raises(LabelError, match="end value"):
        check_labels(task, tiny_neox.tokenizer)
    check_labels(task, tiny_neox.tokenizer, multi_token=True)


def test_recall_with_end_runs_the_multi_splits(tiny_neox):
    cfg = RecallConfig.quick(
        n_train=6, n_eval=3, end="\n", modes=("dual_key",), splits=("same", "multi_new_lab")
    )
    task = builtin_task(seed=0, n_train=6, n_eval=3, multi=True)
    doc = run_recall(tiny_neox, task, cfg, progress=False)
    row = doc["results"]["dual_key"]["multi_new_lab"]
    assert set(doc["results"]["dual_key"]) == {"same", "multi_new_lab"}
    assert row["n"] == 6 and 0.0 <= row["answer_prefix"]["read"] <= 1.0
