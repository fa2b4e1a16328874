"""``fmi memory``: each subcommand, its output, and its bad inputs (one line, exit 2)."""

from __future__ import annotations

import shutil

import pytest

from analyses.cli.main import main


def _run(capsys, *argv):
    code = main(["memory", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def empty_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "empty.fmi"
    assert main(["memory", "new", str(path), "--model", "tiny-gemma", "--quick"]) == 0
    return path


@pytest.fixture
def mem(empty_file, tmp_path):
    path = tmp_path / "m.fmi"
    shutil.copy(empty_file, path)
    return str(path)


def _api_answer(path, prompt, max_new_tokens=16):
    """What the Python API answers from the same file (the tiny model's answers are random)."""
    import fmi

    model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    memory = fmi.FastMemory.load(path, model)
    return memory.generate(model, [prompt], max_new_tokens=max_new_tokens)[0]


def test_new_write_list_ask_replace_delete(capsys, mem):
    code, out, _ = _run(
        capsys, "write", mem, "Alice's favourite drink is", " green tea", "--symbol", "Alice"
    )
    assert (code, out) == (0, "0\n")
    code, out, _ = _run(capsys, "write", mem, "Bob lives in", " New York", "--symbol", "Bob")
    assert (code, out) == (0, "1\n")
    code, out, _ = _run(capsys, "list", mem)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("0\tsymbol='Alice' context=\"'s favourite drink is\"")
    assert lines[1].endswith("'Bob lives in' -> ' New York'")
    code, out, _ = _run(capsys, "ask", mem, "Alice's favourite drink is", "--explain")
    text, why = out.splitlines()
    assert code == 0 and text == _api_answer(mem, "Alice's favourite drink is")
    assert why.startswith("entry 0 fired (score ")
    code, out, _ = _run(
        capsys, "write", mem, "Alice's favourite drink is", " coffee", "--symbol", "Alice"
    )
    assert (code, out) == (0, "2 (replaced 0)\n")
    code, out, _ = _run(capsys, "delete", mem, "1")
    assert code == 0 and out.startswith("deleted 1:")
    code, out, _ = _run(capsys, "list", mem)
    assert [line.split("\t")[0] for line in out.splitlines()] == ["2"]
    code, out, _ = _run(capsys, "ask", mem, "Alice's favourite drink is", "--max-new-tokens", "3")
    assert (code, out) == (0, _api_answer(mem, "Alice's favourite drink is", 3) + "\n")


def test_ask_explains_an_abstention(capsys, mem):
    code, out, _ = _run(capsys, "ask", mem, "The weather today is", "--explain")
    assert code == 0 and out.splitlines()[-1].startswith("no entry fired (best score")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["write", "{mem}", "Bob lives in", " Paris", "--symbol", "Carl"], "'Carl' is not in"),
        (["write", "{mem}", "Bob lives in", ""], "must be non-empty text"),
        (["write", "{mem}", "Bob lives in Par", "is"], "token boundaries"),
        (["delete", "{mem}", "7"], "no entry with id 7"),
        (["ask", "{mem}", "x", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["ask", "{missing}", "x"], "no memory file at"),
        (["list", "{junk}"], "is not a readable fmi memory file"),
        (["new", "{mem}", "--model", "tiny-gemma"], "exists; pass --force"),
        (["new", "{fresh}", "--model", "pythia-7b"], "pythia-7b"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, mem, tmp_path, argv, needle):
    junk = tmp_path / "junk.fmi"
    junk.write_bytes(b"\x00" * 40)
    names = {
        "mem": mem,
        "missing": str(tmp_path / "nope.fmi"),
        "junk": str(junk),
        "fresh": str(tmp_path / "fresh.fmi"),
    }
    code, out, err = _run(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_truncated_file_is_refused_and_a_foreign_model_too(capsys, mem, tmp_path):
    with open(mem, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.fmi"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = _run(capsys, "ask", str(cut), "x")
    assert code == 2 and "not a readable fmi memory file" in err
    other = tmp_path / "neox.fmi"
    assert main(["memory", "new", str(other), "--model", "tiny-neox", "--quick"]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "write", str(other), "Bob lives in", " Paris")
    assert code == 0  # a file follows its own model
