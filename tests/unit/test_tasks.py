"""Tests for ``fmi.experiments.tasks`` and ``fmi.experiments.nonce``: fast, no downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fmi.errors import ConfigError, LabelError, TaskFileError
from fmi.experiments.builtin_tasks import ANIMALS, COLOURS, builtin_task
from fmi.experiments.labels import check_labels
from fmi.experiments.nonce import BLOCKLIST, nonce_words
from fmi.experiments.taskfile import load_task, load_task_file
from fmi.experiments.tasks import Binding, Split, Task, Templates

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "task_file.json"
EVAL_SPLITS = {
    "same": {"game A", "game B"},
    "new_game": {"game C", "game D"},
    "new_lab": {"lab north", "lab south"},
    "paraphrase": {"game C", "game D"},
    "shared_suffix": {"lab north", "camp north", "lab south", "camp south"},
    "crowded": {f"game {c}" for c in "ABCDEFGH"},
}


@pytest.fixture(scope="module")
def task() -> Task:
    return builtin_task(seed=0)


# --------------------------------------------------------------------------- nonce words


def test_nonce_words_shape() -> None:
    words = nonce_words(300, seed=3)
    assert len(words) == 300 == len(set(words))
    for w in words:
        assert re.fullmatch(r"[a-z]{4,9}", w), w
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a), (a, b)


def test_nonce_words_deterministic_and_extendable() -> None:
    assert nonce_words(200, seed=1) == nonce_words(200, seed=1)
    assert nonce_words(200, seed=1)[:50] == nonce_words(50, seed=1)
    assert set(nonce_words(200, seed=1)) != set(nonce_words(200, seed=2))


def test_nonce_words_avoid_task_and_blocked_words() -> None:
    task_words = {"in", "means", "question", "what", "is", "answer", "the", "game", "lab"}
    task_words |= {"camp", "north", "south", *COLOURS, *ANIMALS}
    for seed in range(3):
        words = set(nonce_words(400, seed=seed))
        assert not words & BLOCKLIST
        assert not words & task_words
    assert "zzzz" not in nonce_words(5, seed=0, exclude=["zzzz"])


def test_nonce_words_exclude() -> None:
    first = nonce_words(3, seed=0)
    assert first[0] not in nonce_words(3, seed=0, exclude=[first[0].upper()])


def test_nonce_words_rejects_negative() -> None:
    with pytest.raises(ConfigError):
        nonce_words(-1)


# --------------------------------------------------------------------------- built-in task


def test_builtin_deterministic() -> None:
    assert builtin_task(seed=5) == builtin_task(seed=5)
    a, b = builtin_task(seed=5), builtin_task(seed=6)
    assert set(a.train.symbols()) != set(b.train.symbols())
    assert set(a.split("same").symbols()) != set(b.split("same").symbols())


def test_split_names_and_contexts(task: Task) -> None:
    assert task.train.name == "train"
    assert set(task.train.contexts()) == {"game A", "game B"}
    assert [s.name for s in task.splits] == list(EVAL_SPLITS)
    for name, contexts in EVAL_SPLITS.items():
        assert set(task.split(name).contexts()) == contexts, name


def test_sizes(task: Task) -> None:
    assert len(task.train.symbols()) == 150
    for split in task.splits:
        assert len(split.symbols()) == 40
        assert len(split.bindings) == 40 * len(EVAL_SPLITS[split.name])
    small = builtin_task(seed=0, n_train=7, n_eval=5)
    assert len(small.train.symbols()) == 7
    assert all(len(s.symbols()) == 5 for s in small.splits)


def test_train_and_eval_symbols_disjoint(task: Task) -> None:
    train = set(task.train.symbols())
    for split in task.splits:
        assert not train & set(split.symbols()), split.name


def test_train_has_paraphrased_reads(task: Task) -> None:
    reads = {(b.context, b.read_context) for b in task.train.bindings}
    assert reads == {
        ("game A", "game A"),
        ("game A", "the A game"),
        ("game B", "game B"),
        ("game B", "the B game"),
    }
    by_write: dict[tuple[str, str], set[str]] = {}
    for b in task.train.bindings:
        by_write.setdefault((b.context, b.symbol), set()).add(b.label)
    assert all(len(labels) == 1 for labels in by_write.values())
    assert len(task.train.bindings) == 150 * 2 * 2


def test_paraphrase_split_reads_other_phrasing(task: Task) -> None:
    split = task.split("paraphrase")
    assert {(b.context, b.read_context) for b in split.bindings} == {
        ("game C", "the C game"),
        ("game D", "the D game"),
    }
    for name in EVAL_SPLITS.keys() - {"paraphrase"}:
        assert all(b.read_context == b.context for b in task.split(name).bindings)


def test_labels_conflict_and_stay_in_one_category(task: Task) -> None:
    for split in (task.train, *task.splits):
        per_symbol: dict[str, dict[str, str]] = {}
        for b in split.bindings:
            per_symbol.setdefault(b.symbol, {})[b.context] = b.label
        for symbol, labels in per_symbol.items():
            values = list(labels.values())
            assert len(set(values)) == len(values), (split.name, symbol, labels)
            assert set(values) <= set(COLOURS) or set(values) <= set(ANIMALS)
    used = {lab for s in task.splits for lab in s.labels()}
    assert used & set(COLOURS) and used & set(ANIMALS)


def test_symbol_keeps_category_across_splits(task: Task) -> None:
    category: dict[str, set[bool]] = {}
    for split in task.splits:
        for b in split.bindings:
            category.setdefault(b.symbol, set()).add(b.label in COLOURS)
    assert all(len(c) == 1 for c in category.values())


def test_unrelated_prompts(task: Task) -> None:
    from fmi.experiments.tasks import question_of

    train_prompts = set(task.train.unrelated)
    eval_prompts = set(task.split("same").unrelated)
    assert len(train_prompts) >= 50
    for split in task.splits:  # at least 300 per split, none asking a training question
        assert len(set(split.unrelated)) >= 300, split.name
        asked = {question_of(p) for p in split.unrelated}
        assert len(asked) == len(split.unrelated)  # each question once
        assert asked.isdisjoint({question_of(p) for p in train_prompts}), split.name
    symbols = set(task.train.symbols()) | set(task.split("same").symbols())
    for prompt in train_prompts | eval_prompts:
        assert prompt.startswith("Question: ") and prompt.endswith("Answer:"), prompt
        assert not set(re.findall(r"[a-z]+", prompt.lower())) & symbols, prompt
    assert any(p.startswith("Question: in game A,") for p in train_prompts)
    assert any(p.startswith("Question: in ") for p in eval_prompts)


def test_split_lookup_error_names_options(task: Task) -> None:
    assert task.split("train") is task.train
    with pytest.raises(ConfigError, match="crowded"):
        task.split("nope")


def test_to_dict(task: Task) -> None:
    d = task.to_dict()
    json.dumps(d)
    assert d["name"] == "builtin" and d["seed"] == 0
    assert d["splits"]["crowded"]["bindings"] == 40 * 8
    assert d["splits"]["train"]["symbols"] == 150
    assert d["templates"]["same"]["write"] == Templates().write


# --------------------------------------------------------------------------- templates


def test_prompt_and_target_formatting() -> None:
    t = Templates()
    b = Binding("game C", "dax", "red", "the C game")
    assert t.prompt("write", b) == "In game C, dax means"
    assert t.prompt("read", b) == "Question: in the C game, what is dax? Answer:"
    assert t.prompt("plain", b) == "Question: what is dax? Answer:"
    for kind in ("write", "read", "plain"):
        assert t.target(kind, "red") == " red"
    assert Binding("game A", "dax", "red").read_context == "game A"
    assert t.prompt("read", Binding("game A", "dax", "red")).startswith("Question: in game A,")


def test_target_without_space() -> None:
    t = Templates(write="In {context}, {symbol}={label}")
    assert t.prompt("write", Binding("g", "dax", "red")) == "In g, dax="
    assert t.target("write", "red") == "red"
    with pytest.raises(ConfigError):
        t.prompt("speak", Binding("g", "dax", "red"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"write": "In {context}, {symbol} means {label}."}, "write"),
        ({"read": "Question: what is {symbol}? Answer: {label}"}, "read"),
        ({"plain": "Question: what is it? Answer: {label}"}, "plain"),
        ({"write": "In {context}, {symbol} is {colour} {label}"}, "write"),
    ],
)
def test_bad_templates(kwargs: dict[str, str], name: str) -> None:
    with pytest.raises(TaskFileError, match=f"template '{name}'"):
        Templates(**kwargs)


# --------------------------------------------------------------------------- task files


def _good_file() -> dict[str, Any]:
    return {
        "name": "tiny",
        "templates": {
            "write": "In {context}, {symbol} means {label}",
            "read": "Q: in {context}, {symbol}? A: {label}",
            "plain": "Q: {symbol}? A: {label}",
        },
        "bindings": [
            {"context": "room 1", "symbol": "dax", "label": "red"},
            {"context": "room 2", "symbol": "dax", "label": "blue", "read_context": "room two"},
        ],
        "unrelated": ["Q: what is the capital of France? A:"],
    }


def _write(tmp_path: Path, data: Any, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_example_file_loads() -> None:
    task = load_task_file(EXAMPLE, seed=0)
    split = task.split("file")
    assert 6 <= len(split.bindings) <= 10
    assert len(split.contexts()) == 2
    assert split.unrelated
    assert task.train == builtin_task(seed=0).train
    assert load_task(str(EXAMPLE)) == task


def test_good_file(tmp_path: Path) -> None:
    task = load_task_file(_write(tmp_path, _good_file(), "good.json"), seed=2)
    assert task.name == "tiny" and task.seed == 2
    assert [s.name for s in task.splits] == ["file"]
    split = task.split("file")
    b = split.bindings[1]
    assert split.templates.prompt("read", b) == "Q: in room two, dax? A:"
    assert split.templates.prompt("write", b) == "In room 2, dax means"
    assert split.bindings[0].read_context == "room 1"


def test_file_templates_optional(tmp_path: Path) -> None:
    data = _good_file()
    del data["templates"]
    assert load_task_file(_write(tmp_path, data)).split("file").templates == Templates()
    data["templates"] = {"plain": "Say {symbol}: {label}"}
    templates = load_task_file(_write(tmp_path, data)).split("file").templates
    assert templates.plain == "Say {symbol}: {label}" and templates.write == Templates().write


def _drop(key: str) -> Any:
    def edit(d: dict[str, Any]) -> None:
        del d[key]

    return edit


def _set(*path: Any, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop_in_binding(i: int, key: str) -> Any:
    def edit(d: dict[str, Any]) -> None:
        del d["bindings"][i][key]

    return edit


BAD_FILES = [
    (_drop("name"), "name"),
    (_drop("bindings"), "bindings"),
    (_drop("unrelated"), "unrelated"),
    (_set("extra", value=1), "extra"),
    (_set("name", value=3), "name"),
    (_set("name", value=""), "name"),
    (_set("bindings", value=[]), "bindings"),
    (_set("bindings", value={"a": 1}), "bindings"),
    (_set("bindings", 1, value="dax"), "bindings[1]"),
    (_set("bindings", 1, "label", value=""), "bindings[1].label"),
    (_set("bindings", 1, "label", value=7), "bindings[1].label"),
    (_set("bindings", 1, "label", value=" blue"), "bindings[1].label"),
    (_set("bindings", 0, "colour", value="red"), "bindings[0]"),
    (_drop_in_binding(0, "symbol"), "bindings[0]"),
    (_set("bindings", 0, "read_context", value=None), "bindings[0].read_context"),
    (_set("bindings", 1, "context", value="room 1"), "bindings[1].label"),
    (_set("bindings", 1, value={"context": "room 1", "symbol": "dax", "label": "blue"}),
     "bindings[1].label"),
    (_set("bindings", 1, value={"context": "room 1", "symbol": "dax", "label": "red"}),
     "bindings[1]"),
    (_set("templates", value="x"), "templates"),
    (_set("templates", "write", value="In {context}, {symbol} means {label}."), "templates.write"),
    (_set("templates", "read", value="Q: {symbol}? A: {label}"), "templates.read"),
    (_set("templates", "plain", value=5), "templates.plain"),
    (_set("templates", "speak", value="{symbol} {label}"), "speak"),
    (_set("unrelated", value="Q: hi? A:"), "unrelated"),
    (_set("unrelated", value=[]), "unrelated"),
    (_set("unrelated", 0, value=""), "unrelated[0]"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "field_name"), BAD_FILES)
def test_bad_file_names_file_and_field(tmp_path: Path, edit: Any, field_name: str) -> None:
    data = _good_file()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    message = str(err.value)
    assert str(path) in message
    assert field_name in message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "name": "x",\n  "bindings": [,]\n}')
    with pytest.raises(TaskFileError, match=r"line 3 column") as err:
        load_task_file(path)
    assert str(path) in str(err.value)


def test_top_level_not_object(tmp_path: Path) -> None:
    path = _write(tmp_path, "[1, 2]")
    with pytest.raises(TaskFileError, match="top level"):
        load_task_file(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(TaskFileError, match="not found") as err:
        load_task_file(path)
    assert str(path) in str(err.value)


def test_load_task_dispatch() -> None:
    assert load_task("builtin", seed=1) == builtin_task(seed=1)
    with pytest.raises(ConfigError, match="builtin") as err:
        load_task("mytask")
    assert ".json" in str(err.value)


# --------------------------------------------------------------------------- check_labels


def _word_tokenizer(words: list[str]) -> Any:
    """A whitespace word-level tokenizer built in memory (no downloads)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


class _ChunkTokenizer:
    """A fake tokenizer: known words are one token, others split into 5-letter chunks."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.pieces: list[str] = []

    def _id(self, piece: str) -> int:
        if piece not in self.pieces:
            self.pieces.append(piece)
        return self.pieces.index(piece)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        assert add_special_tokens is False
        word = text.strip()
        lead = text[: len(text) - len(text.lstrip())]
        if word in self.known:
            return {"input_ids": [self._id(lead + word)]}
        chunks = [word[i : i + 5] for i in range(0, len(word), 5)]
        chunks[0] = lead + chunks[0]
        return {"input_ids": [self._id(c) for c in chunks]}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[i] for i in ids]


def _task_with_label(label: str) -> Task:
    base = builtin_task(seed=0, n_train=4, n_eval=2)
    extra = Split("extra", (Binding("game A", "dax", label),), Templates(), ())
    return Task("t", base.train, (*base.splits, extra), 0)


def test_builtin_labels_pass_word_tokenizer(task: Task) -> None:
    check_labels(task, _word_tokenizer([*COLOURS, *ANIMALS]))
    check_labels(task, _ChunkTokenizer(set(COLOURS) | set(ANIMALS)))


def test_multi_token_label_fake_tokenizer() -> None:
    tokenizer = _ChunkTokenizer(set(COLOURS) | set(ANIMALS))
    with pytest.raises(LabelError) as err:
        check_labels(_task_with_label("turquoise"), tokenizer)
    assert str(err.value) == (
        "label 'turquoise' is not one token for this tokenizer: ' turquoise' -> [' turqu', 'oise']"
        " (answers of several tokens need an end value: --end '\\n')"
    )


def test_multi_token_label_hf_tokenizer() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = [*COLOURS, *ANIMALS, "turqu", "##oise"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(LabelError, match="label 'turquoise' is not one token") as err:
        check_labels(_task_with_label("turquoise"), tokenizer)
    assert "turqu" in str(err.value) and "oise" in str(err.value)
    assert "'red'" not in str(err.value)
