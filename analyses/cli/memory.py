"""``fmi memory``: a memory file you write facts to and ask, from the shell.

    fmi memory new FILE --model NAME          fit on the training split, save an empty memory
    fmi memory write FILE STATEMENT ANSWER    add (or replace) a fact; prints its id
    fmi memory ask FILE PROMPT [--explain]    the greedy continuation reading the memory
    fmi memory list FILE                      one entry per line: id, spans, statement, answer
    fmi memory delete FILE ID                 remove one entry

Every command loads the model the file was written with and refuses a damaged file or another
model in one line; files are replaced atomically, and ``write``, ``delete`` and ``new`` hold an
exclusive lock on ``FILE.lock`` (POSIX ``flock``), so parallel writers of one file take turns.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager
from pathlib import Path

from fmi.errors import ConfigError

MODEL_HELP = "registry name (see `fmi models`), Hugging Face id or local directory; default auto"


def add_parser(sub) -> None:
    m = sub.add_parser("memory", help="a memory file: new, write, ask, list, delete")
    msub = m.add_subparsers(dest="memory_command", required=True)
    n = msub.add_parser("new", help="fit on the built-in training split; save an empty memory")
    n.add_argument("file")
    n.add_argument("--model", default="auto", help=MODEL_HELP)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--quick", action="store_true", help="a tiny fit (seconds; for smoke tests)")
    n.add_argument("--force", action="store_true", help="overwrite an existing file")
    n.add_argument(
        "--mode",
        default=None,
        help="the read rule (default: the fit's; relation_key knows the relation asked)",
    )
    w = msub.add_parser("write", help="add a fact, or replace the one with the same key spans")
    w.add_argument("file")
    w.add_argument("statement", help='the text before the answer, e.g. "Alice\'s drink is"')
    w.add_argument("answer", help="the answer as it follows the statement, e.g. ' green tea'")
    w.add_argument("--symbol", help="what the fact is about (text in the statement)")
    w.add_argument("--context", help="the fact's frame (text in the statement)")
    a = msub.add_parser("ask", help="print the greedy continuation of PROMPT reading the memory")
    a.add_argument("file")
    a.add_argument("prompt")
    a.add_argument("--max-new-tokens", type=int, default=16)
    a.add_argument("--explain", action="store_true", help="also say which entry fired")
    ls = msub.add_parser("list", help="one entry per line: id, spans, statement, answer")
    ls.add_argument("file")
    d = msub.add_parser("delete", help="remove the entry with id ID")
    d.add_argument("file")
    d.add_argument("id", type=int)


def _load(path: str):
    from fmi.memory.file_format import memory_metadata
    from fmi.memory.store import FastMemory
    from fmi.models.registry import load_model

    meta = memory_metadata(path)
    written = meta.get("fingerprint") or {}  # the revision and dtype it was written with
    model = load_model(
        meta["model_name"],
        announce=lambda m: print(m, file=sys.stderr),
        revision=written.get("revision"),
        dtype=written.get("dtype", "float32"),
    )
    return model, FastMemory.load(path, model)


def _locked_file(path: str) -> AbstractContextManager[Path]:
    """:func:`fmi.memory.file_format.locked` on an existing memory file (no stray lock file
    beside a mistyped name)."""
    from fmi.errors import MemoryFileError
    from fmi.memory.file_format import locked

    if not Path(path).exists():
        raise MemoryFileError(f"no memory file at {path}")
    return locked(path)


def _new(args: argparse.Namespace) -> int:
    from analyses.cli.options import placement
    from fmi.experiments.config import RecallConfig
    from fmi.memory.file_format import locked
    from fmi.memory.store import FastMemory
    from fmi.models.registry import load_model

    if Path(args.file).exists() and not args.force:
        raise ConfigError(f"{args.file} exists; pass --force to overwrite it")
    model = load_model(
        args.model,
        seed=args.seed,
        announce=lambda m: print(m, file=sys.stderr),
        **placement(args),
    )
    cfg = (RecallConfig.quick if args.quick else RecallConfig)(model=model.name, seed=args.seed)
    memory = FastMemory.fit(model, cfg)
    if args.mode is not None:
        if args.mode not in memory.thresholds:
            raise ConfigError(
                f"--mode must be one of the fitted rules {', '.join(sorted(memory.thresholds))}; "
                f"got {args.mode!r}"
            )
        memory.mode = args.mode
    Path(args.file).parent.mkdir(parents=True, exist_ok=True)
    with locked(args.file):  # not in the middle of another command's read-modify-write
        if Path(args.file).exists() and not args.force:
            raise ConfigError(f"{args.file} exists; pass --force to overwrite it")
        memory.save(args.file)
    print(
        f"wrote {args.file}: empty memory for {model.name} (mode {memory.mode}, threshold "
        f"{memory.thresholds[memory.mode]:.3f}, refine steps {memory.refine_steps})"
    )
    return 0


def _write(args: argparse.Namespace) -> int:
    with _locked_file(args.file):  # read, add, save; a parallel writer waits, then reads ours
        model, memory = _load(args.file)
        spans = {k: v for k, v in (("symbol", args.symbol), ("context", args.context)) if v}
        stored = memory.write(args.statement, args.answer, spans=spans or None, model=model)
        memory.save(args.file)
    replaced = "" if stored.replaced is None else f" (replaced {stored.replaced.id})"
    print(f"{stored.entry.id}{replaced}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from fmi.memory.ask import ask

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, memory = _load(args.file)
    answer = ask(memory, model, [args.prompt], max_new_tokens=args.max_new_tokens, until=memory.end)
    print(answer[0].text)
    if args.explain:
        print(answer[0].explain())
    return 0


def entry_line(entry) -> str:
    """``ID  symbol=... context=...  STATEMENT -> ANSWER`` for ``fmi memory list``."""
    return (
        f"{entry.id}\tsymbol={entry.symbol!r} context={entry.context!r}\t"
        f"{entry.statement!r} -> {entry.label!r}"
    )


def _list(args: argparse.Namespace) -> int:
    from fmi.memory.entry import Entry
    from fmi.memory.file_format import memory_metadata

    meta = memory_metadata(args.file)  # no model needed to list
    for e in meta.get("entries", []):
        print(entry_line(Entry(**e)))
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _locked_file(args.file):
        model, memory = _load(args.file)
        removed = memory.delete(args.id)
        memory.save(args.file)
    print(f"deleted {removed.id}: {removed.statement!r} -> {removed.label!r}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"new": _new, "write": _write, "ask": _ask, "list": _list, "delete": _delete}[
        args.memory_command
    ](args)
