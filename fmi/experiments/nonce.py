"""Pronounceable invented words ("nonce" symbols) such as ``blizack`` or ``domesh``.

Words are built from consonant-vowel syllables and end in a consonant cluster that is rare
at the end of English words (``x``, ``ck``, ``sh``, ...), which keeps them pronounceable but
unfamiliar. Generation is deterministic from the seed (a private ``random.Random``), and a
longer request extends a shorter one: ``nonce_words(10, s)[:5] == nonce_words(5, s)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from fmi.errors import ConfigError

ONSETS: tuple[str, ...] = (
    "b", "bl", "br", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "k", "kl", "kr", "l", "m",
    "n", "p", "pl", "pr", "r", "s", "sk", "sl", "sn", "sp", "st", "t", "tr", "v", "w", "z",
)  # fmt: skip
VOWELS: tuple[str, ...] = ("a", "e", "i", "o", "u")
CODAS: tuple[str, ...] = ("x", "ck", "p", "sh", "b", "g", "z", "m", "nk", "sk", "ft")

MIN_LETTERS = 4
MAX_LETTERS = 9
MIN_SYLLABLES = 2
MAX_SYLLABLES = 3
TWO_SYLLABLE_SHARE = 0.6  # shorter words are more typical nonce words ("dax", "blicket")

# Real words the syllable grammar can produce, plus the words the tasks use (labels, contexts,
# template words) so that a symbol never collides with them even if the grammar changes.
_BLOCKED_TEXT = """
    red blue green yellow black white pink brown orange purple gray grey
    cat dog bird fish horse cow pig lion bear frog duck wolf fox mouse sheep goat
    game games lab labs camp camps north south east west the in what is means mean answer
    question plain write read context symbol label
    kebab remix relax latex detox borax radix index helix
    radish relish banish vanish finish polish punish lavish ravish famish blemish perish
    tulip setup letup develop gallop sunup dewlap
    denim venom totem madam datum modem golem minim bosom sodom begum
    damask kiosk humbug bedbug debug zigzag topaz kibosh galosh
    rebab nabob sahib ramrod rematch
    blimp stomp stamp clamp cramp tramp trump plump slump stump skimp
    smash flash slash trash brash stash crash clash splash
    brick trick stick slick flick click prick snack stack track black smack knack
    drink stink blink brink think slink plank blank prank stank drank flank
"""
BLOCKLIST: frozenset[str] = frozenset(_BLOCKED_TEXT.split())


def is_nonce_candidate(word: str) -> bool:
    """Whether ``word`` fits the length bounds and is not a blocked real word."""
    return MIN_LETTERS <= len(word) <= MAX_LETTERS and word not in BLOCKLIST


def _syllable(rng: random.Random) -> str:
    """One open consonant-vowel syllable, e.g. ``bla``."""
    return rng.choice(ONSETS) + rng.choice(VOWELS)


def _candidate(rng: random.Random) -> str:
    """A word of 2-3 syllables whose last syllable is closed by a coda, e.g. ``blo-dix``."""
    n_syllables = MIN_SYLLABLES if rng.random() < TWO_SYLLABLE_SHARE else MAX_SYLLABLES
    return "".join(_syllable(rng) for _ in range(n_syllables)) + rng.choice(CODAS)


def _clashes_by_prefix(word: str, taken: list[str]) -> bool:
    """Whether ``word`` is a prefix of an accepted word or has one as a prefix."""
    return any(word.startswith(other) or other.startswith(word) for other in taken)


def nonce_words(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[str]:
    """Return ``n`` distinct invented lowercase words, deterministic from ``seed``.

    No word is a prefix of another, none is in :data:`BLOCKLIST` or ``exclude``
    (compared lowercase), and each has 2-3 syllables and 4-9 letters.
    """
    if n < 0:
        raise ConfigError(f"nonce_words: n must be >= 0, got {n}")
    rng = random.Random(seed)
    blocked = {w.lower() for w in exclude}
    words: list[str] = []
    budget = 1000 + 200 * n
    while len(words) < n:
        budget -= 1
        if budget < 0:
            raise ConfigError(f"nonce_words: could not generate {n} distinct words")
        word = _candidate(rng)
        if not is_nonce_candidate(word) or word in blocked or _clashes_by_prefix(word, words):
            continue
        words.append(word)
    return words
