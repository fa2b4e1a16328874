"""Known answers for the match rules, rates and entropies of :mod:`fmi.experiments.metrics`."""

from __future__ import annotations

import math

import pytest
import torch

from fmi.experiments.metrics import (
    answer_match,
    answer_prefix,
    answer_word,
    distribution,
    next_token_entropy,
    rate,
    text_matches,
)


class Chars:
    """A tokenizer whose token ids are code points (decode is exact and visible), with one
    special token, id 0, decoded as ``<s>`` unless skipped."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(("" if skip_special_tokens else "<s>") if i == 0 else chr(i) for i in ids)


def ids(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)


@pytest.mark.parametrize(
    ("text", "answer", "hit"),
    [
        (" red", " red", True),
        ("red", " red", True),
        ("\n\nred", "red", True),
        (" red.", " red", True),
        (" red fox", " red", True),
        (" reddish", " red", False),
        (" red2", " red", False),
        (" re", " red", False),
        (" blue", " red", False),
        ("", " red", False),
        (" New York, then", " New York", True),
        (" New Yorker", " New York", False),
        (" New", " New York", False),
        (" anything", "   ", False),
        (" red_", " red", True),
    ],
)
def test_text_matches_is_word_bounded(text, answer, hit):
    assert text_matches(text, answer) is hit
    assert answer_match(Chars(), ids(text), answer) is hit


def test_special_tokens_are_skipped_before_matching():
    got = (0, *ids(" red"))
    assert answer_word(Chars(), got) == "red"
    assert answer_match(Chars(), got, " red")


@pytest.mark.parametrize(
    ("text", "word"),
    [(" pig let", "pig"), ("\n red.", "red"), ("...", ""), ("", ""), ("_x", ""), (" a_b", "a")],
)
def test_answer_word_is_the_first_word(text, word):
    assert answer_word(Chars(), ids(text)) == word


@pytest.mark.parametrize(
    ("got", "want", "frac"),
    [
        ((5, 6, 7, 8), (5, 6, 7, 8), 1.0),
        ((5, 6, 9), (5, 6, 7, 8), 0.5),
        ((9, 6, 7, 8), (5, 6, 7, 8), 0.0),
        ((5,), (5, 6), 0.5),
        ((), (5,), 0.0),
        ((5, 6, 7), (5,), 1.0),
    ],
)
def test_answer_prefix_counts_until_the_first_departure(got, want, frac):
    assert answer_prefix(got, want) == frac


def test_answer_prefix_needs_an_answer():
    with pytest.raises(ValueError, match="^answer_prefix needs at least one answer token$"):
        answer_prefix((1,), ())


def test_rate_is_the_mean_and_nan_when_empty():
    assert rate([True, False, False, True]) == 0.5
    assert rate([True, True, True]) == 1.0
    assert rate([False]) == 0.0
    assert math.isnan(rate([]))


def test_entropy_of_known_distributions():
    logits = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [math.log(3), 0, -1e9, -1e9]]
    )
    got = next_token_entropy(logits)
    assert got[0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert got[1].item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.75, 0.25])
    assert got[2].item() == pytest.approx(float(-(p * p.log()).sum()), abs=1e-6)
    probs, ent = distribution(logits)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert probs[2, :2].tolist() == pytest.approx([0.75, 0.25], abs=1e-6)
    assert torch.equal(ent, got)
