"""Binding tasks: invented symbols whose meaning depends on a context.

A :class:`Binding` says that in context ``C`` the symbol ``S`` means label ``L``. It is written
from a statement (``In game A, blicket means`` -> `` red``) and read back from a question
(``Question: in game A, what is blicket? Answer:`` -> `` red``). A :class:`Task` holds a
training :class:`Split` and several evaluation splits on held-out symbols and unseen contexts.

Tasks come from :func:`builtin_task` (deterministic from a seed) or from a JSON task file
(:mod:`fmi.experiments.taskfile`, whose ``load_task`` picks between them by name);
:mod:`fmi.experiments.labels` checks
that every label is one token for a tokenizer.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fmi.errors import ConfigError, TaskFileError
from fmi.experiments.nonce import nonce_words

KINDS: tuple[str, ...] = ("write", "read", "plain")
LABEL_FIELD = "{label}"

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


@dataclass(frozen=True)
class Binding:
    """In ``context`` (as written), ``symbol`` means ``label``; asked about in ``read_context``.

    ``read_context`` defaults to ``context``; it differs when the question paraphrases the
    context (written ``game C``, asked ``the C game``). ``label`` has no leading space.
    """

    context: str
    symbol: str
    label: str
    read_context: str = field(default="")

    def __post_init__(self) -> None:
        if not self.read_context:
            object.__setattr__(self, "read_context", self.context)


def template_problem(text: str, required: Sequence[str]) -> str | None:
    """Why ``text`` is not a valid template needing ``required`` fields, or ``None`` if it is."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if not text.endswith(LABEL_FIELD):
        return f"must end with '{LABEL_FIELD}': {text!r}"
    prefix = text[: -len(LABEL_FIELD)]
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(prefix) if name is not None]
    except ValueError as err:
        return f"is not a valid format string ({err}): {text!r}"
    allowed = set(required) | {"context", "symbol"}
    for name in fields:
        if name not in allowed:
            return f"has unknown field '{{{name}}}' (allowed: {sorted(allowed)}): {text!r}"
    for name in required:
        if name not in fields:
            return f"must contain '{{{name}}}': {text!r}"
    if not prefix.strip():
        return f"must have text before '{LABEL_FIELD}': {text!r}"
    return None


REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "write": ("context", "symbol"),
    "read": ("context", "symbol"),
    "plain": ("symbol",),
}


@dataclass(frozen=True)
class Templates:
    """How bindings are phrased: a write statement, a read question, a context-free question.

    Each template ends with ``{label}``; the text before it is the prompt.
    """

    write: str = "In {context}, {symbol} means {label}"
    read: str = "Question: in {context}, what is {symbol}? Answer: {label}"
    plain: str = "Question: what is {symbol}? Answer: {label}"

    def __post_init__(self) -> None:
        for kind in KINDS:
            problem = template_problem(getattr(self, kind), REQUIRED_FIELDS[kind])
            if problem is not None:
                raise TaskFileError(f"template '{kind}' {problem}")

    def _template(self, kind: str) -> str:
        """The template for ``kind``; ``ConfigError`` for an unknown kind."""
        if kind not in KINDS:
            raise ConfigError(f"unknown template kind {kind!r}: use one of {list(KINDS)}")
        return getattr(self, kind)

    def prompt(self, kind: str, b: Binding) -> str:
        """The text before ``{label}``, formatted for ``b``, trailing whitespace stripped.

        ``read`` uses ``b.read_context``; ``write`` uses ``b.context``; ``plain`` has no context.
        """
        prefix = self._template(kind)[: -len(LABEL_FIELD)]
        context = b.read_context if kind == "read" else b.context
        return prefix.format(context=context, symbol=b.symbol).rstrip()

    def target(self, kind: str, label: str) -> str:
        """``label`` as a continuation of the prompt: ``" red"`` if whitespace precedes it."""
        prefix = self._template(kind)[: -len(LABEL_FIELD)]
        return " " + label if prefix[-1:].isspace() else label

    def to_dict(self) -> dict[str, str]:
        """The three templates by kind."""
        return {kind: getattr(self, kind) for kind in KINDS}


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """Items in order of first appearance, without repeats."""
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class Split:
    """A named bank of bindings phrased by ``templates``, plus unrelated control prompts."""

    name: str
    bindings: tuple[Binding, ...]
    templates: Templates
    unrelated: tuple[str, ...]

    def contexts(self) -> tuple[str, ...]:
        """Distinct write contexts, in order of first appearance."""
        return _unique(b.context for b in self.bindings)

    def read_contexts(self) -> tuple[str, ...]:
        """Distinct read contexts, in order of first appearance."""
        return _unique(b.read_context for b in self.bindings)

    def symbols(self) -> tuple[str, ...]:
        """Distinct symbols, in order of first appearance."""
        return _unique(b.symbol for b in self.bindings)

    def labels(self) -> tuple[str, ...]:
        """Distinct labels, in order of first appearance."""
        return _unique(b.label for b in self.bindings)

    def sizes(self) -> dict[str, int]:
        """Counts of bindings, symbols, contexts, labels and unrelated prompts."""
        return {
            "bindings": len(self.bindings),
            "symbols": len(self.symbols()),
            "contexts": len(self.contexts()),
            "labels": len(self.labels()),
            "unrelated": len(self.unrelated),
        }


@dataclass(frozen=True)
class Task:
    """A training split and evaluation splits, built from ``seed``."""

    name: str
    train: Split
    splits: tuple[Split, ...]
    seed: int

    def split_names(self) -> tuple[str, ...]:
        """Names of ``train`` and every evaluation split."""
        return (self.train.name, *(s.name for s in self.splits))

    def split(self, name: str) -> Split:
        """The split called ``name`` (``train`` included); ``ConfigError`` naming the options."""
        for candidate in (self.train, *self.splits):
            if candidate.name == name:
                return candidate
        raise ConfigError(
            f"task {self.name!r} has no split {name!r}: available splits are "
            + ", ".join(self.split_names())
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: name, seed, per-split sizes and contexts, templates."""
        return {
            "name": self.name,
            "seed": self.seed,
            "splits": {
                s.name: {**s.sizes(), "context_names": list(s.contexts())}
                for s in (self.train, *self.splits)
            },
            "templates": {s.name: s.templates.to_dict() for s in (self.train, *self.splits)},
        }


# --------------------------------------------------------------------------- built-in task


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


def question_prompt(question: str, context: str | None = None) -> str:
    """``Question: [in CONTEXT, ]QUESTION Answer:``, the read format without a symbol."""
    return (
        f"Question: {question} Answer:"
        if context is None
        else (f"Question: in {context}, {question} Answer:")
    )


def question_of(prompt: str) -> str:
    """The question a :func:`question_prompt` asks, without its frame.

    >>> question_of("Question: in game C, what is the capital of Peru? Answer:")
    'what is the capital of Peru?'
    """
    match = re.fullmatch(r"Question: (?:in [^,]+, )?(.*) Answer:", prompt)
    if match is None:
        raise ValueError(f"not a question prompt: {prompt!r}")
    return match.group(1)


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
