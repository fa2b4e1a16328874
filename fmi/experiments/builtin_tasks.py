"""The built-in binding tasks (``seed``, ``multi``, ...): their label sets, contexts,
paraphrases and unrelated questions, and :func:`builtin_task`, which builds one from a seed."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from fmi.errors import ConfigError
from fmi.experiments.nonce import nonce_words
from fmi.experiments.tasks import Binding, Split, Task, Templates, question_prompt

COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "black", "white", "pink", "brown", "orange", "purple",
    "gray",
)  # fmt: skip


ANIMALS: tuple[str, ...] = (
    "cat", "dog", "bird", "fish", "horse", "cow", "pig", "lion", "bear", "frog", "duck", "wolf",
    "fox", "mouse", "sheep", "goat",
)  # fmt: skip


CATEGORIES: tuple[tuple[str, ...], ...] = (COLOURS, ANIMALS)


# Answers of 1 to 4 tokens (Gemma-3's tokenizer), for the multi-token splits. No city here
# answers one of the unrelated questions (no Paris, Tokyo, Berlin, Rome).
PLACES: tuple[str, ...] = (
    "London", "Chicago", "New York", "Hong Kong", "Cape Town", "Salt Lake City",
    "Rio de Janeiro", "Sydney",
)  # fmt: skip


DOGS: tuple[str, ...] = (
    "beagle", "terrier", "golden retriever", "German shepherd", "border collie",
    "cocker spaniel", "Bernese mountain dog", "Old English sheepdog",
)  # fmt: skip


VEHICLES: tuple[str, ...] = (
    "bus", "tractor", "fire engine", "pickup truck", "school bus", "ice cream truck",
    "hot air balloon", "double decker bus",
)  # fmt: skip


MULTI_CATEGORIES: tuple[tuple[str, ...], ...] = (PLACES, DOGS, VEHICLES)


TRAIN_CONTEXTS: tuple[str, ...] = ("game A", "game B")


EVAL_CONTEXTS: dict[str, tuple[str, ...]] = {
    "same": ("game A", "game B"),
    "new_game": ("game C", "game D"),
    "new_lab": ("lab north", "lab south"),
    "paraphrase": ("game C", "game D"),
    "shared_suffix": ("lab north", "camp north", "lab south", "camp south"),
    "crowded": tuple(f"game {letter}" for letter in "ABCDEFGH"),
}


PARAPHRASED_SPLITS: frozenset[str] = frozenset({"paraphrase"})


# Held-out symbols with answers of 1 to 4 tokens (built with ``builtin_task(multi=True)``).
MULTI_CONTEXTS: dict[str, tuple[str, ...]] = {
    "multi_same": ("game A", "game B"),
    "multi_new_lab": ("lab north", "lab south"),
}


# Questions without any invented word (fmi.experiments.questions): training and evaluation get
# disjoint sets
# of questions; every evaluation split gets every evaluation question (over 300).
N_TRAIN_QUESTIONS = 60


TRAIN_UNRELATED_CONTEXTS: tuple[str, ...] = TRAIN_CONTEXTS


EVAL_UNRELATED_CONTEXTS: tuple[str, ...] = ("game C", "game D", "lab north", "camp south")


def paraphrase_game(context: str) -> str:
    """Rephrase ``"game X"`` as ``"the X game"`` (the reading form of the paraphrase split)."""
    match = re.fullmatch(r"game (\S+)", context)
    if match is None:
        raise ConfigError(f"cannot paraphrase context {context!r}: expected 'game X'")
    return f"the {match.group(1)} game"


def excluded_words() -> set[str]:
    """Every word the built-in task uses, so that no invented symbol collides with one."""
    from fmi.experiments.questions import all_questions

    texts = [*COLOURS, *ANIMALS, *all_questions()]
    texts += [*TRAIN_CONTEXTS, *EVAL_UNRELATED_CONTEXTS, *Templates().to_dict().values()]
    texts += [c for contexts in EVAL_CONTEXTS.values() for c in contexts]
    return {w for text in texts for w in re.findall(r"[a-z]+", text.lower())}


def label_categories(rng: random.Random, symbols: Sequence[str]) -> dict[str, int]:
    """One label category per symbol, alternating over ``symbols`` from a seed-chosen start."""
    start = rng.randrange(len(CATEGORIES))
    return {symbol: (start + i) % len(CATEGORIES) for i, symbol in enumerate(symbols)}


def conflicting_bank(
    rng: random.Random,
    categories: Mapping[str, int],
    contexts: Sequence[str],
    paraphrase: bool = False,
) -> list[Binding]:
    """Bindings of every symbol in ``categories`` in every context.

    Each symbol's labels come from its category and are distinct across contexts
    (conflicting); with ``paraphrase`` the question phrases ``game X`` as ``the X game``.
    """
    bindings: list[Binding] = []
    for symbol, category in categories.items():
        labels = rng.sample(CATEGORIES[category], len(contexts))
        for context, label in zip(contexts, labels, strict=True):
            read = paraphrase_game(context) if paraphrase else context
            bindings.append(Binding(context, symbol, label, read))
    return bindings


def _with_paraphrased_reads(bindings: Sequence[Binding]) -> list[Binding]:
    """Each binding followed by a copy read through the paraphrased context."""
    out: list[Binding] = []
    for b in bindings:
        out += [b, Binding(b.context, b.symbol, b.label, paraphrase_game(b.context))]
    return out


def _unrelated_prompts(seed: int) -> tuple[list[str], list[str]]:
    """Training and evaluation control prompts, none with an invented word, asking disjoint
    sets of questions (:func:`fmi.experiments.questions.split_questions`). Every third question is
    asked
    inside a context: a training context for training prompts, an unseen one for evaluation."""
    from fmi.experiments.questions import split_questions

    train_q, eval_q = split_questions(seed, N_TRAIN_QUESTIONS)
    halves = []
    for questions, contexts in (
        (train_q, TRAIN_UNRELATED_CONTEXTS),
        (eval_q, EVAL_UNRELATED_CONTEXTS),
    ):
        halves.append(
            [
                question_prompt(q, contexts[(i // 3) % len(contexts)] if i % 3 == 2 else None)
                for i, q in enumerate(questions)
            ]
        )
    return halves[0], halves[1]


def builtin_task(
    seed: int = 0,
    n_train: int = 150,
    n_eval: int = 40,
    multi: bool = False,
    n_unrelated: int | None = None,
) -> Task:
    """The built-in task, deterministic from ``seed``.

    ``train``: ``n_train`` symbols in ``game A`` / ``game B``, each binding also read as
    ``the A game`` / ``the B game``. Evaluation splits share a pool of ``n_eval`` held-out
    symbols (each symbol keeps one label category; labels are drawn afresh per split):
    ``same``, ``new_game``, ``new_lab``, ``paraphrase``, ``shared_suffix``, ``crowded``
    (contexts in :data:`EVAL_CONTEXTS`). With ``multi``, two more splits follow on the same
    held-out symbols, ``multi_same`` and ``multi_new_lab`` (:data:`MULTI_CONTEXTS`), whose
    labels have 1 to 4 tokens (:data:`MULTI_CATEGORIES`); the other splits are unchanged.

    >>> import fmi
    >>> task = fmi.builtin_task(seed=0, n_train=12, n_eval=6)
    >>> [split.name for split in task.splits][:3], len(task.train.bindings)
    (['same', 'new_game', 'new_lab'], 48)
    """
    if n_train < 1 or n_eval < 1:
        raise ConfigError(
            f"builtin task needs n_train >= 1 and n_eval >= 1, got {n_train}, {n_eval}"
        )
    rng = random.Random(seed)
    symbols = nonce_words(n_train + n_eval, seed, exclude=excluded_words())
    train_symbols, eval_symbols = symbols[:n_train], symbols[n_train:]
    templates = Templates()
    train_unrelated, eval_unrelated = _unrelated_prompts(seed)
    if n_unrelated is not None:  # a smaller control set (smoke tests); None keeps all of them
        if n_unrelated < 1:
            raise ConfigError(f"n_unrelated must be >= 1, got {n_unrelated}")
        eval_unrelated = eval_unrelated[:n_unrelated]
    train_categories = label_categories(rng, train_symbols)
    eval_categories = label_categories(rng, eval_symbols)
    train_bank = _with_paraphrased_reads(conflicting_bank(rng, train_categories, TRAIN_CONTEXTS))
    train = Split("train", tuple(train_bank), templates, tuple(train_unrelated))
    splits = tuple(
        Split(
            name,
            tuple(conflicting_bank(rng, eval_categories, contexts, name in PARAPHRASED_SPLITS)),
            templates,
            tuple(eval_unrelated),
        )
        for name, contexts in EVAL_CONTEXTS.items()
    )
    if multi:  # drawn after everything above, which therefore stays as without ``multi``
        start = rng.randrange(len(MULTI_CATEGORIES))
        kinds = {s: (start + i) % len(MULTI_CATEGORIES) for i, s in enumerate(eval_symbols)}
        splits += tuple(
            Split(name, tuple(_multi_bank(rng, kinds, contexts)), templates, tuple(eval_unrelated))
            for name, contexts in MULTI_CONTEXTS.items()
        )
    return Task("builtin", train, splits, seed)


def _multi_bank(
    rng: random.Random, kinds: Mapping[str, int], contexts: Sequence[str]
) -> list[Binding]:
    """Like :func:`conflicting_bank`, with labels from :data:`MULTI_CATEGORIES`."""
    bindings: list[Binding] = []
    for symbol, kind in kinds.items():
        labels = rng.sample(MULTI_CATEGORIES[kind], len(contexts))
        bindings += [Binding(c, symbol, lab) for c, lab in zip(contexts, labels, strict=True)]
    return bindings
