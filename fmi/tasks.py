"""Binding tasks: invented symbols whose meaning depends on a context.

A :class:`Binding` says that in context ``C`` the symbol ``S`` means label ``L``. It is written
from a statement (``In game A, blicket means`` -> `` red``) and read back from a question
(``Question: in game A, what is blicket? Answer:`` -> `` red``). A :class:`Task` holds a
training :class:`Split` and several evaluation splits on held-out symbols and unseen contexts.

Tasks come from :func:`builtin_task` (deterministic from a seed) or from a JSON task file
(:func:`load_task_file`); :func:`load_task` picks between them by name.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmi.errors import ConfigError, LabelError, TaskFileError
from fmi.nonce import nonce_words

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

# Questions without any invented word; the builtin task splits them between train and eval.
GENERAL_QUESTIONS: tuple[str, ...] = (
    "what is the capital of France?", "what is the capital of Japan?",
    "what is the capital of Italy?", "what is the capital of Spain?",
    "what is the capital of Germany?", "what is the capital of Egypt?",
    "what is the capital of Canada?", "what is the capital of Russia?",
    "what is the color of the sky?", "what is the color of grass?",
    "what is the color of snow?", "what is the color of a banana?",
    "what is the color of coal?", "what is the color of blood?",
    "what is the color of the sun?", "what is the color of milk?",
    "what is two plus two?", "what is three plus four?", "what is ten minus one?",
    "what is five times two?", "what is the largest planet?", "what is the closest star?",
    "what is frozen water called?", "what is the opposite of hot?",
    "what is the opposite of up?", "what is the opposite of night?",
    "what is the first letter of the alphabet?", "what is the last day of the week?",
    "what is the first month of the year?", "what is a baby cat called?",
    "what is a baby dog called?", "what animal says moo?", "what animal barks?",
    "what animal has a trunk?", "what animal lays eggs and quacks?",
    "what animal has stripes and a mane?", "what do bees make?", "what do cows drink?",
    "what do we breathe?", "what falls from clouds?", "what is the boiling point of water?",
    "what language is spoken in Brazil?", "what language is spoken in Mexico?",
    "who wrote Hamlet?", "who painted the Mona Lisa?", "how many legs does a spider have?",
    "how many days are in a week?", "how many months are in a year?",
    "how many sides does a triangle have?", "how many wheels does a bicycle have?",
    "what is the tallest animal?", "what is the fastest land animal?",
    "what metal is a wedding ring often made of?", "what gas do plants absorb?",
    "what is the main ingredient of bread?", "what fruit keeps the doctor away?",
)  # fmt: skip
CONTEXT_QUESTIONS: tuple[str, ...] = (
    "what is the color of the sky?", "what is the color of grass?", "what is two plus two?",
    "what is the capital of France?", "what animal barks?", "what is frozen water called?",
    "what is the opposite of hot?", "how many days are in a week?", "what do bees make?",
    "what is the largest planet?", "what animal says moo?", "who wrote Hamlet?",
    "what is the first letter of the alphabet?", "what falls from clouds?",
    "how many legs does a spider have?", "what is the color of snow?",
)  # fmt: skip
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


def _excluded_words() -> set[str]:
    """Every word the built-in task uses, so that no invented symbol collides with one."""
    texts = [*COLOURS, *ANIMALS, *GENERAL_QUESTIONS, *CONTEXT_QUESTIONS]
    texts += [*TRAIN_CONTEXTS, *EVAL_UNRELATED_CONTEXTS, *Templates().to_dict().values()]
    texts += [c for contexts in EVAL_CONTEXTS.values() for c in contexts]
    return {w for text in texts for w in re.findall(r"[a-z]+", text.lower())}


def _categories(rng: random.Random, symbols: Sequence[str]) -> dict[str, int]:
    """One label category per symbol, alternating over ``symbols`` from a seed-chosen start."""
    start = rng.randrange(len(CATEGORIES))
    return {symbol: (start + i) % len(CATEGORIES) for i, symbol in enumerate(symbols)}


def _bank(
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


def _unrelated_prompts(rng: random.Random) -> tuple[list[str], list[str]]:
    """Disjoint (train, eval) control prompts in the read format, none with an invented word.

    Each half gets half of the general questions (``Question: ... Answer:``) and half of the
    context questions, asked in its own contexts (``Question: in game A, ... Answer:``).
    """
    general = list(GENERAL_QUESTIONS)
    with_context = list(CONTEXT_QUESTIONS)
    rng.shuffle(general)
    rng.shuffle(with_context)
    halves = []
    for part, contexts in ((0, TRAIN_UNRELATED_CONTEXTS), (1, EVAL_UNRELATED_CONTEXTS)):
        prompts = [f"Question: {q} Answer:" for q in general[part::2]]
        prompts += [
            f"Question: in {contexts[i % len(contexts)]}, {q} Answer:"
            for i, q in enumerate(with_context[part::2])
        ]
        halves.append(prompts)
    return halves[0], halves[1]


def builtin_task(seed: int = 0, n_train: int = 150, n_eval: int = 40) -> Task:
    """The built-in task, deterministic from ``seed``.

    ``train``: ``n_train`` symbols in ``game A`` / ``game B``, each binding also read as
    ``the A game`` / ``the B game``. Evaluation splits share a pool of ``n_eval`` held-out
    symbols (each symbol keeps one label category; labels are drawn afresh per split):
    ``same``, ``new_game``, ``new_lab``, ``paraphrase``, ``shared_suffix``, ``crowded``
    (contexts in :data:`EVAL_CONTEXTS`).
    """
    if n_train < 1 or n_eval < 1:
        raise ConfigError(
            f"builtin task needs n_train >= 1 and n_eval >= 1, got {n_train}, {n_eval}"
        )
    rng = random.Random(seed)
    symbols = nonce_words(n_train + n_eval, seed, exclude=_excluded_words())
    train_symbols, eval_symbols = symbols[:n_train], symbols[n_train:]
    templates = Templates()
    train_unrelated, eval_unrelated = _unrelated_prompts(rng)
    train_categories = _categories(rng, train_symbols)
    eval_categories = _categories(rng, eval_symbols)
    train_bank = _with_paraphrased_reads(_bank(rng, train_categories, TRAIN_CONTEXTS))
    train = Split("train", tuple(train_bank), templates, tuple(train_unrelated))
    splits = tuple(
        Split(
            name,
            tuple(_bank(rng, eval_categories, contexts, name in PARAPHRASED_SPLITS)),
            templates,
            tuple(eval_unrelated),
        )
        for name, contexts in EVAL_CONTEXTS.items()
    )
    return Task("builtin", train, splits, seed)


# --------------------------------------------------------------------------- task files

FILE_KEYS: tuple[str, ...] = ("name", "templates", "bindings", "unrelated")
REQUIRED_FILE_KEYS: tuple[str, ...] = ("name", "bindings", "unrelated")
BINDING_KEYS: tuple[str, ...] = ("context", "symbol", "label", "read_context")
REQUIRED_BINDING_KEYS: tuple[str, ...] = ("context", "symbol", "label")


class _FileChecker:
    """Validates one parsed task file; every error names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> TaskFileError:
        """A ``TaskFileError`` prefixed with the file name."""
        return TaskFileError(f"task file {self.path}: {message}")

    def keys(
        self, obj: Mapping[str, Any], where: str, allowed: Sequence[str], required: Sequence[str]
    ) -> None:
        """No unknown keys and no missing required keys in ``obj``."""
        prefix = f"{where}: " if where else ""
        for key in obj:
            if key not in allowed:
                raise self.fail(f"{prefix}unknown key {key!r} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in obj:
                raise self.fail(f"{prefix}missing key {key!r}")

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        """``value`` as a JSON object."""
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be an object, got {_json_type(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        """``value`` as a non-empty string without surrounding whitespace."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where} must be a non-empty string, got {_json_repr(value)}")
        if value != value.strip():
            raise self.fail(f"{where} must not start or end with whitespace: {value!r}")
        return value

    def text_list(self, value: Any, where: str) -> list[str]:
        """``value`` as a non-empty list of non-empty strings."""
        if not isinstance(value, list):
            raise self.fail(f"{where} must be a list, got {_json_type(value)}")
        if not value:
            raise self.fail(f"{where} must not be empty")
        return [self.text(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def templates(self, value: Any) -> Templates:
        """The ``templates`` object; missing kinds take the defaults."""
        raw = self.obj(value, "templates")
        self.keys(raw, "templates", KINDS, ())
        for kind, text in raw.items():
            problem = template_problem(text, REQUIRED_FIELDS[kind])
            if problem is not None:
                raise self.fail(f"templates.{kind} {problem}")
        return Templates(**raw)

    def binding(self, value: Any, where: str) -> Binding:
        """One entry of ``bindings``."""
        raw = self.obj(value, where)
        self.keys(raw, where, BINDING_KEYS, REQUIRED_BINDING_KEYS)
        fields = {key: self.text(raw[key], f"{where}.{key}") for key in raw}
        return Binding(**fields)

    def bindings(self, value: Any) -> list[Binding]:
        """The non-empty ``bindings`` list, with no two entries contradicting each other."""
        if not isinstance(value, list):
            raise self.fail(f"bindings must be a list, got {_json_type(value)}")
        if not value:
            raise self.fail("bindings must not be empty")
        out = [self.binding(item, f"bindings[{i}]") for i, item in enumerate(value)]
        self.no_conflicts(out)
        return out

    def no_conflicts(self, bindings: Sequence[Binding]) -> None:
        """One label per (context, symbol), and no binding repeated."""
        seen: dict[tuple[str, str], int] = {}
        seen_reads: dict[tuple[str, str, str], int] = {}
        for i, b in enumerate(bindings):
            j = seen.setdefault((b.context, b.symbol), i)
            if bindings[j].label != b.label:
                raise self.fail(
                    f"bindings[{i}].label {b.label!r} conflicts with bindings[{j}].label "
                    f"{bindings[j].label!r} (same context {b.context!r} and symbol {b.symbol!r})"
                )
            k = seen_reads.setdefault((b.context, b.symbol, b.read_context), i)
            if k != i:
                raise self.fail(f"bindings[{i}] repeats bindings[{k}]")


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "list", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _json_repr(value: Any) -> str:
    """A short description of ``value`` for error messages."""
    return repr(value) if isinstance(value, str) else _json_type(value)


def _read_json(checker: _FileChecker) -> Any:
    """The parsed contents of the task file."""
    try:
        text = checker.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise checker.fail("file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise checker.fail(f"cannot read file ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise checker.fail(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None


def load_task_file(path: str | Path, seed: int = 0, n_train: int = 150) -> Task:
    """A task from a JSON file: its bindings form the ``file`` split; ``train`` is built-in.

    Format: ``{"name": str, "templates": {"write", "read", "plain"} (optional, each
    optional), "bindings": [{"context", "symbol", "label", "read_context" (optional)}],
    "unrelated": [str]}``. Any problem raises ``TaskFileError`` naming the file and field.
    """
    checker = _FileChecker(Path(path))
    data = checker.obj(_read_json(checker), "top level")
    checker.keys(data, "", FILE_KEYS, REQUIRED_FILE_KEYS)
    name = checker.text(data["name"], "name")
    templates = checker.templates(data["templates"]) if "templates" in data else Templates()
    bindings = checker.bindings(data["bindings"])
    unrelated = checker.text_list(data["unrelated"], "unrelated")
    split = Split("file", tuple(bindings), templates, tuple(unrelated))
    return Task(name, builtin_task(seed, n_train=n_train).train, (split,), seed)


def load_task(name_or_path: str, seed: int = 0, n_train: int = 150) -> Task:
    """``"builtin"`` for :func:`builtin_task`, or a path ending ``.json`` for a task file."""
    if name_or_path == "builtin":
        return builtin_task(seed, n_train=n_train)
    if str(name_or_path).endswith(".json"):
        return load_task_file(name_or_path, seed, n_train=n_train)
    raise ConfigError(
        f"unknown task {name_or_path!r}: use 'builtin' or a path to a .json task file"
    )


# --------------------------------------------------------------------------- labels


def label_targets(task: Task) -> dict[str, str]:
    """Every distinct label target (e.g. ``" red"``) in ``task``, mapped to its label."""
    targets: dict[str, str] = {}
    for split in (task.train, *task.splits):
        for label in split.labels():
            for kind in KINDS:
                targets.setdefault(split.templates.target(kind, label), label)
    return targets


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (HF tokenizer or any look-alike)."""
    encoded = tokenizer(text, add_special_tokens=False)
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded.input_ids
    return list(ids)


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable pieces for ``ids``: decoded one by one, else token names, else the ids."""
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([i]) for i in ids]
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]
    return [str(i) for i in ids]


def check_labels(task: Task, tokenizer: Any) -> None:
    """Raise ``LabelError`` unless every label target encodes to exactly one token.

    ``tokenizer(text, add_special_tokens=False)`` must return ``input_ids``; the message names
    each failing label and its pieces, e.g. ``label 'turquoise' is not one token for this
    tokenizer: ' turquoise' -> [' turqu', 'oise']``.
    """
    problems = []
    for target, label in label_targets(task).items():
        ids = _token_ids(tokenizer, target)
        if len(ids) != 1:
            pieces = _token_strings(tokenizer, ids)
            problems.append(
                f"label {label!r} is not one token for this tokenizer: {target!r} -> {pieces!r}"
            )
    if problems:
        raise LabelError("; ".join(problems))
