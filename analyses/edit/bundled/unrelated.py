"""The unrelated prompts: neutral beginnings from a small grammar that name no known subject."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from itertools import product

from fmi.experiments.known_facts import KnownFact, load_known_facts

UNRELATED_TRAIN = 200

_PEOPLE = ("The child", "My neighbour", "The teacher", "Her brother", "An old man", "The cook",
           "My aunt", "The gardener")  # fmt: skip
_GRAMMAR: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    (
        "The {} in the {} was",
        (
            ("weather", "light", "air", "traffic", "noise", "sky", "wind", "rain", "road",
             "garden", "kitchen", "market"),
            ("morning", "afternoon", "evening", "night", "spring", "summer", "autumn", "winter"),
        ),
    ),
    (
        "{} kind of {} is",
        (
            ("My favourite", "My least favourite", "The best", "Her favourite", "A popular",
             "The cheapest"),
            ("music", "soup", "bread", "tea", "holiday", "book", "film", "cheese", "fruit",
             "flower", "game", "sandwich", "dessert", "exercise", "weather"),
        ),
    ),
    (
        "{} way to {} is",
        (
            ("A good", "The easiest", "The worst", "One simple", "My usual", "A quick"),
            ("start the day", "relax after work", "save money", "learn a new skill",
             "make friends", "keep a garden", "cook rice", "stay warm", "fall asleep",
             "clean a window", "spend a rainy afternoon", "travel light", "remember names",
             "prepare for a test", "fix a squeaky door", "cheer someone up"),
        ),
    ),
    (
        "{} put the {} on the",
        (
            _PEOPLE,
            ("cup", "book", "blanket", "basket", "lamp", "box", "coat", "plate", "kettle",
             "candle"),
        ),
    ),
    (
        "{} opened the {} and found",
        (
            _PEOPLE,
            ("drawer", "cupboard", "letter", "parcel", "window", "fridge", "suitcase", "gate",
             "jar", "door"),
        ),
    ),
    (
        "The {} {} was sitting on the",
        (
            ("small", "old", "grey", "sleepy", "hungry", "fat"),
            ("cat", "dog", "bird", "rabbit", "goat", "duck", "frog", "owl"),
        ),
    ),
    (
        "On {} mornings, {} usually",
        (
            ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
            ("I", "we", "my sister", "they", "the family"),
        ),
    ),
    (
        "The {} {}",
        (
            ("kitchen", "bakery", "hallway", "garden shed", "classroom", "library", "attic",
             "basement", "waiting room", "bus"),
            ("smelled of", "was full of", "was quiet because", "felt warm after"),
        ),
    ),
    (
        "When it started to {}, {}",
        (
            ("rain", "snow", "get dark", "get cold", "hail"),
            ("we", "the children", "everyone", "I", "the dog", "my friends"),
        ),
    ),
    (
        "The hardest part of {} is",
        (
            ("cooking dinner", "moving house", "waking up early", "painting a fence",
             "writing a letter", "learning to swim", "baking bread", "packing a bag",
             "tidying a room", "walking uphill", "waiting for a bus", "sewing a button",
             "planting seeds", "folding laundry", "washing the dishes", "building a shelf",
             "making soup", "drawing a face", "riding a bicycle", "keeping a diary"),
        ),
    ),
    (
        "After {}, {} felt",
        (
            ("a long walk", "the meeting", "dinner", "the storm", "a cold shower", "the party",
             "a short nap", "the race"),
            ("everyone", "she", "he", "I", "we"),
        ),
    ),
)  # fmt: skip


def _mention_pattern(subjects: Iterable[str]) -> re.Pattern[str]:
    """One word-bounded alternation of ``subjects`` (longest first)."""
    names = sorted(set(subjects), key=lambda s: (-len(s), s))
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(s) for s in names) + r")(?!\w)")


def build_unrelated(facts: list[KnownFact] | None = None) -> dict[str, list[str]]:
    """Neutral prompt beginnings from a small grammar, none naming a known subject, shuffled by
    ``random.Random("unrelated")``: the first 200 for train, the rest for eval.

    >>> doc = build_unrelated()
    >>> len(doc["train"]), len(doc["eval"])
    (200, 455)
    """
    facts = load_known_facts() if facts is None else facts
    subjects = sorted({f.subject for f in facts})
    prompts = sorted(
        {frame.format(*choice) for frame, slots in _GRAMMAR for choice in product(*slots)}
    )
    mentions = _mention_pattern(subjects)
    prompts = [p for p in prompts if not mentions.search(p)]
    random.Random("unrelated").shuffle(prompts)
    return {"train": prompts[:UNRELATED_TRAIN], "eval": prompts[UNRELATED_TRAIN:]}
