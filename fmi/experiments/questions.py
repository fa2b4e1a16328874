"""Questions without any invented word, for the ``unrelated`` and ``unrelated_changed`` metrics.

A question is identified by its text without any frame (``what is the capital of Peru?``); the
built-in task asks it bare (``Question: ... Answer:``) or inside a context (``Question: in game
C, ... Answer:``). Training and evaluation draw from disjoint sets of questions, so no
evaluation question is a reframed training question. The families below give
``len(all_questions())`` distinct questions (over 400), enough for 300 per evaluation split.

>>> qs = all_questions()
>>> len(qs) >= 400, len(set(qs)) == len(qs)
(True, True)
>>> train, evaluate = split_questions(seed=0, n_train=60)
>>> len(train), len(evaluate) >= 300, set(train).isdisjoint(evaluate)
(60, True, True)
"""

from __future__ import annotations

import random

COUNTRIES: tuple[str, ...] = (
    "France", "Japan", "Italy", "Spain", "Germany", "Egypt", "Canada", "Russia", "Peru",
    "Kenya", "Norway", "Sweden", "Greece", "Turkey", "Chile", "Cuba", "Iran", "Iraq", "Ireland",
    "Portugal", "Poland", "Austria", "Hungary", "Finland", "Denmark", "Thailand", "Vietnam",
    "India", "China", "Brazil", "Argentina", "Mexico", "Australia", "Nigeria", "Ghana",
    "Morocco", "Colombia", "Belgium", "Switzerland", "the Netherlands",
)  # fmt: skip
THINGS_WITH_COLOURS: tuple[str, ...] = (
    "the sky", "grass", "snow", "a banana", "coal", "blood", "the sun", "milk", "a lemon",
    "an orange", "a tomato", "a cucumber", "chocolate", "a strawberry", "a polar bear",
    "a crow", "the sea", "a carrot", "an emerald", "a ruby", "a sapphire", "charcoal",
    "a lime", "a pumpkin", "ivory", "a flamingo", "a frog", "salt", "pepper", "honey",
)  # fmt: skip
OPPOSITES: tuple[str, ...] = (
    "hot", "up", "night", "big", "fast", "happy", "old", "early", "full", "open", "light",
    "hard", "wet", "rich", "loud", "strong", "thin", "high", "near", "clean", "first", "left",
    "true", "inside", "win", "buy", "push", "begin", "love", "north",
)  # fmt: skip
PLURALS: tuple[str, ...] = (
    "mouse", "child", "goose", "man", "woman", "tooth", "foot", "person", "leaf", "knife",
    "wolf", "box", "city", "baby", "ox", "cactus", "sheep", "fish", "deer", "potato",
)  # fmt: skip
NUMBER_WORDS: tuple[str, ...] = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)  # fmt: skip
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
DAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip
LANGUAGES_OF: tuple[str, ...] = (
    "Brazil", "Mexico", "France", "Germany", "Japan", "China", "Italy", "Russia", "Portugal",
    "Argentina", "Egypt", "Greece", "Sweden", "Poland", "Turkey", "Korea",
)  # fmt: skip
ANIMALS: tuple[str, ...] = (
    "dog", "cat", "cow", "horse", "duck", "sheep", "pig", "lion", "owl", "snake", "bee",
    "goat", "frog", "mouse", "crow", "donkey", "chicken", "wolf",
)  # fmt: skip
STATES: tuple[str, ...] = (
    "Texas", "California", "New York", "Florida", "Ohio", "Georgia", "Arizona", "Oregon",
    "Nevada", "Utah", "Colorado", "Alaska", "Hawaii", "Illinois", "Michigan", "Virginia",
    "Washington", "Tennessee", "Kentucky", "Louisiana",
)  # fmt: skip
ORDINALS: tuple[str, ...] = (
    "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
)  # fmt: skip
GENERAL: tuple[str, ...] = (
    "what is the largest planet?", "what is the closest star?", "what is frozen water called?",
    "what is the first letter of the alphabet?", "what is the last day of the week?",
    "what is the first month of the year?", "what is a baby cat called?",
    "what is a baby dog called?", "what animal says moo?", "what animal barks?",
    "what animal has a trunk?", "what animal lays eggs and quacks?", "what do bees make?",
    "what do cows drink?", "what do we breathe?", "what falls from clouds?",
    "what is the boiling point of water?", "who wrote Hamlet?", "who painted the Mona Lisa?",
    "how many legs does a spider have?", "how many days are in a week?",
    "how many months are in a year?", "how many sides does a triangle have?",
    "how many wheels does a bicycle have?", "what is the tallest animal?",
    "what is the fastest land animal?", "what metal is a wedding ring often made of?",
    "what gas do plants absorb?", "what is the main ingredient of bread?",
    "what fruit keeps the doctor away?", "what animal says meow?", "what animal says oink?",
    "what animal hops and has a pouch?", "what is the largest ocean?",
    "what is the longest river?", "what is the hardest natural material?",
    "how many hours are in a day?", "how many minutes are in an hour?",
    "how many legs does a dog have?", "how many continents are there?",
    "who discovered gravity?", "who wrote Romeo and Juliet?", "what do pandas eat?",
    "what do caterpillars become?", "what is the chemical symbol for gold?",
    "what is the chemical symbol for water?", "what planet is known as the red planet?",
    "what is the capital city of the United States?", "what do you call a baby horse?",
    "what do you call a baby sheep?",
)  # fmt: skip


def all_questions() -> list[str]:
    """Every built-in unrelated question, in a fixed order, each once."""
    out: list[str] = []
    out += [f"what is the capital of {c}?" for c in COUNTRIES]
    out += [f"what is the color of {t}?" for t in THINGS_WITH_COLOURS]
    out += [f"what is the opposite of {w}?" for w in OPPOSITES]
    out += [f"what is the plural of {w}?" for w in PLURALS]
    out += [
        f"what is {a} plus {b}?" for i, a in enumerate(NUMBER_WORDS[:6]) for b in NUMBER_WORDS[i:6]
    ]
    out += [f"what is {a} times {b}?" for a in NUMBER_WORDS[1:5] for b in NUMBER_WORDS[1:5]]
    out += [f"what is {a} minus one?" for a in NUMBER_WORDS[1:]]
    out += [f"what month comes after {m}?" for m in MONTHS]
    out += [f"what day comes after {d}?" for d in DAYS]
    out += [f"what language is spoken in {c}?" for c in LANGUAGES_OF]
    out += [f"what continent is {c} in?" for c in COUNTRIES]
    out += [f"what is the currency of {c}?" for c in COUNTRIES[:30]]
    out += [f"what sound does a {a} make?" for a in ANIMALS]
    out += [f"how many legs does a {a} have?" for a in ANIMALS]
    out += [f"what is the capital of the state of {s}?" for s in STATES]
    out += [f"what is the {o} letter of the alphabet?" for o in ORDINALS]
    out += [f"what is the {o} month of the year?" for o in ORDINALS]
    out += [f"what is the square of {n}?" for n in NUMBER_WORDS[1:]]
    out += list(GENERAL)
    return list(dict.fromkeys(out))  # each once, first occurrence kept


def split_questions(seed: int, n_train: int) -> tuple[list[str], list[str]]:
    """``n_train`` training questions and every other question for evaluation, disjoint by
    question, shuffled by ``seed``."""
    qs = all_questions()
    if not 0 < n_train < len(qs):
        raise ValueError(f"n_train must be in 1..{len(qs) - 1}, got {n_train}")
    random.Random(f"questions:{seed}").shuffle(qs)
    return sorted(qs[:n_train]), qs[n_train:]
