"""The ``fmi`` command line: ``models``, ``recall``, ``analyses``, ``compare``, ``capacity``,
``bench``, ``inspect``, ``memory``, ``sweep``."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from analyses.cli import memory as memory_cli
from analyses.cli import sweep as sweep_cli
from analyses.cli.options import parser, placement
from fmi.errors import ConfigError, FmiError, Interrupted
from fmi.reporting.atomic import write_json


def _models(_: argparse.Namespace) -> int:
    from fmi.models.registry import list_models

    infos = list_models()
    width = max(len(info.name) for info in infos)
    for info in infos:
        state = "available" if info.available else "unavailable"
        print(
            f"{info.name:<{width}}  {state:<12} {info.description}"
            + ("" if info.available else f"  ({info.reason})")
        )
    print(
        "Also: any Hugging Face id (owner/name, --revision for a checkpoint) or a local "
        "Hugging Face model folder; see docs/models.md."
    )
    return 0


def _end_text(arg: str | None) -> str | None:
    """``--end`` with backslash escapes decoded (``'\\n'`` is a newline)."""
    if arg is None or "\\" not in arg or not arg.isascii():
        return arg
    try:
        return codecs.decode(arg.encode("utf-8"), "unicode_escape")
    except UnicodeDecodeError as err:
        raise ConfigError(f"--end {arg!r} has a bad escape: {err.reason}") from None


def _recall(args: argparse.Namespace) -> int:
    from fmi.experiments.config import RecallConfig
    from fmi.experiments.recall import run_recall, task_for
    from fmi.experiments.table import recall_report
    from fmi.memory.retrieve import check_modes

    modes = tuple(check_modes([m.strip() for m in args.modes.split(",") if m.strip()]))
    given = {
        "model": args.model,
        "task": args.task,
        "modes": modes,
        "seed": args.seed,
        "splits": tuple(x.strip() for x in (args.splits or "").split(",") if x.strip()),
        "end": None if args.seed_value else _end_text(args.end),
    }
    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_eval", args.n_eval)) if v is not None}
    if args.quick:
        cfg = RecallConfig.quick(**given, **sizes, refine_grid=(1,))
    else:
        refine = (1,) if args.seed_value else RecallConfig.refine_grid
        cfg = RecallConfig(**given, **sizes, refine_grid=refine)
    task = task_for(cfg)
    for name in cfg.splits:
        task.split(name)  # an unknown split fails before the model loads
    if args.resume and not args.json:
        raise ConfigError("--resume needs --json: the finished splits are kept beside it")
    if args.seeds is not None:
        if args.resume:
            raise ConfigError("--resume is not available with --seeds yet; run one seed each")
        return _recall_seeds(args, cfg)
    model = _load(args.model, args.seed, args)
    units = None
    if args.json:
        from fmi.experiments.recall import recall_fingerprint
        from fmi.experiments.run_folder import RunFolder, run_folder_for

        fingerprint = recall_fingerprint(model, task, cfg)
        units = RunFolder(run_folder_for(args.json), fingerprint, resume=args.resume)
        if args.resume and units.done():
            print(f"fmi: resuming: {', '.join(units.done())} already finished", file=sys.stderr)
    doc = run_recall(model, task, cfg, progress=not args.quiet, units=units)
    print(recall_report(doc))
    _write_json(args.json, doc)
    if units is not None:
        units.remove()
    return 0


def _recall_seeds(args: argparse.Namespace, cfg) -> int:
    from fmi.experiments.seeds import parse_seeds, run_seeds, seeds_report

    seeds = parse_seeds(args.seeds)
    model = _load(args.model, seeds[0], args)
    doc = run_seeds(model, cfg, seeds, progress=not args.quiet)
    print(seeds_report(doc))
    _write_json(args.json, doc)
    return 0


def _load(name: str, seed: int, args: argparse.Namespace):
    """:func:`fmi.models.registry.load_model` with the command's ``--revision``, ``--device``
    and ``--dtype``."""
    from fmi.models.registry import load_model

    return load_model(name, seed=seed, **placement(args))


def _write_json(path: str | None, doc: dict) -> None:
    """Write ``doc`` to ``path`` (parents made) and say so; nothing without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json(path, doc)
        print(f"wrote {path}")


def _analyses(args: argparse.Namespace) -> int:
    from analyses.prepare import AnalysisConfig
    from analyses.run import ANALYSES, check_names, run_analyses

    names = check_names([n.strip() for n in (args.only or ",".join(ANALYSES)).split(",") if n])
    if args.quick:
        cfg = AnalysisConfig.quick_config(model=args.model or "tiny-gemma", seed=args.seed)
    else:
        cfg = AnalysisConfig(model=args.model or "auto", seed=args.seed)
    model = _load(cfg.model, cfg.seed, args)
    run_analyses(
        cfg, args.out, names=names, model=model, progress=not args.quiet, resume=args.resume
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from analyses.compare.config import CompareConfig
    from analyses.compare.figures import markdown_table
    from analyses.compare.run import run_compare
    from fmi.experiments.taskfile import FILE_SPLIT

    default = "same" if args.task == "builtin" else FILE_SPLIT
    splits = tuple(x.strip() for x in (args.splits or default).split(",") if x.strip())
    if args.quick:
        cfg = CompareConfig.quick_config(
            model=args.model or "tiny-gemma", task=args.task, seed=args.seed, splits=splits
        )
    else:
        cfg = CompareConfig(
            model=args.model or "auto", task=args.task, seed=args.seed, splits=splits
        )
    if args.seeds is not None:
        if args.resume:
            raise ConfigError("--resume is not available with --seeds yet; run one seed each")
        from analyses.compare.seeds import run_compare_seeds, seeds_markdown
        from fmi.experiments.seeds import parse_seeds

        seeds = parse_seeds(args.seeds)
        model = _load(cfg.model, seeds[0], args)
        doc = run_compare_seeds(cfg, seeds, args.out, model=model, progress=not args.quiet)
        for seed, one in doc["per_seed"].items():
            for name, result in one["splits"].items():
                print(f"model {doc['model']} | seed {seed} | split {name}")
                print(markdown_table(result["rows"]))
        print(seeds_markdown(doc))
        _write_json(args.json, doc)
        return 0
    doc, path = run_compare(
        cfg,
        args.out,
        model=_load(cfg.model, cfg.seed, args),
        json_path=args.json,
        progress=not args.quiet,
        resume=args.resume,
    )
    for name, result in doc["splits"].items():
        print(f"model {doc['model']} | split {name} | {doc['header']['wall_seconds']} s")
        print(markdown_table(result["rows"]))
    print(f"wrote {path}" + (f" and {args.json}" if args.json else ""))
    return 0


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _edit(args: argparse.Namespace) -> int:
    from analyses.edit.bundled.files import BUNDLED
    from analyses.edit.config import METHODS, EditConfig
    from analyses.edit.figures import markdown_table
    from analyses.edit.run import run_edit, write_outputs
    from fmi.experiments.seeds import parse_seeds

    methods = tuple(x.strip() for x in (args.methods or ",".join(METHODS)).split(",") if x.strip())
    quick: dict[str, Any] = (
        {"scored": 4, "tune_edits": 4, "edits": (1, 4), "unrelated": 12} if args.quick else {}
    )
    edits = _sizes(args.edits, "--edits") if args.edits else quick.get("edits", (1, 10, 100, 1000))
    cfg = EditConfig(
        model=args.model or ("tiny-gemma" if args.quick else "auto"),
        data=args.data,
        format=args.format,
        methods=methods,
        edits=edits,
        seeds=parse_seeds(args.seeds) if args.seeds else (0,),
        scored=args.scored if args.scored is not None else quick.get("scored", 100),
        max_new_tokens=args.max_new_tokens,
        cell_budget_s=args.cell_budget,
        tune_edits=quick.get("tune_edits", args.tune_edits),
        unrelated=quick.get("unrelated", 0),
    )
    if not args.data.endswith((".json", ".jsonl")) and args.data not in BUNDLED:
        raise ConfigError(
            f"--data must be one of {', '.join(BUNDLED)} or a .json / .jsonl file, "
            f"got {args.data!r}"
        )
    model = _load(cfg.model, cfg.seeds[0], args)
    partial = None
    if args.json:
        from fmi.reporting.atomic import write_json

        def partial(doc: dict) -> None:  # an interrupted run keeps its finished cells
            write_json(args.json, doc)

    doc = run_edit(model, cfg, progress=not args.quiet, partial=partial)
    path = write_outputs(doc, args.json, args.out or Path("reports") / model.slug)
    print(f"model {model.name} | data {doc['data']} | {doc['header']['wall_seconds']} s")
    print(markdown_table(doc))
    print(f"wrote {path}" + (f" and {args.json}" if args.json else ""))
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from analyses.capacity.config import CapacityConfig
    from analyses.capacity.figures import markdown_tables
    from analyses.capacity.run import render, run_capacity

    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        path = render(doc, args.out)
        print(markdown_tables(doc["curve"], doc["lora"]))
        write_json(args.from_json, doc)
        print(f"rebuilt {path} (and the power law in {args.from_json}) without measuring")
        return 0
    if args.quick:
        cfg = CapacityConfig.quick_config(model=args.model or "tiny-gemma", seed=args.seed)
    else:
        cfg = CapacityConfig(seed=args.seed).with_model(args.model or "auto")
    if args.sizes:
        sizes = _sizes(args.sizes, "--sizes")
        lora = [n for n in cfg.lora_sizes if n in sizes]
        cfg = replace(cfg, sizes=sizes, lora_sizes=tuple(lora))
    if args.lora_sizes is not None:
        cfg = replace(cfg, lora_sizes=_sizes(args.lora_sizes, "--lora-sizes"))
    model = _load(cfg.model, cfg.seed, args)
    doc, path = run_capacity(
        cfg, args.out, model=model, json_path=args.json, progress=not args.quiet
    )
    print(f"model {doc['model']} | {doc['header']['seconds']}")
    print(markdown_tables(doc["curve"], doc["lora"]))
    law = doc["power_law"]
    print(f"LoRA loss law: {law if isinstance(law, str) else law['formula']}")
    print(f"wrote {path}" + (f" and {args.json}" if args.json else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from analyses.bench import BenchConfig, run_bench, summary_lines

    cfg = BenchConfig(model=args.model, seed=args.seed, prompts=args.prompts, repeats=args.repeats)
    if args.quick:
        cfg = BenchConfig.quick_config(model=args.model, seed=args.seed)
    doc = run_bench(cfg, model=_load(cfg.model, cfg.seed, args), progress=not args.quiet)
    print("\n".join(summary_lines(doc)))
    _write_json(args.json, doc)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from analyses.inspect.run import run_inspect

    path, ins = run_inspect(
        model=args.model,
        context=args.context,
        symbol=args.symbol,
        label=args.label,
        prompt=args.prompt,
        mode=args.mode,
        memory_path=args.memory,
        out=args.out,
        n_train=args.n_train,
        n_eval=args.n_eval,
        seed=args.seed,
        force=args.force,
        **placement(args),
    )
    print(ins.summary())
    print(f"wrote {path}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any work starts."""
    from fmi.reporting.atomic import check_output_folder, check_output_path

    for name in ("json", "out"):
        value = getattr(args, name, None)
        if not value:
            continue
        if name == "out" and args.command != "inspect":  # a folder
            check_output_folder(value, what="--out folder")
        else:
            check_output_path(value, what=f"--{name}")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_stop_signal(signum: int, frame) -> None:
    """Stop the command: raise :class:`Interrupted` (exit 128 + the signal's number). A signal
    that lands in a finalizer (``__del__``, e.g. a progress bar's) would have its exception
    printed and ignored there, and the command would run on: it is sent again once the
    finalizer has returned."""
    if frame is not None and frame.f_code.co_name == "__del__":
        threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        return
    raise Interrupted(signal.Signals(signum).name, 128 + signum)


def _interrupted(err: Interrupted) -> int:
    """One line: what the command finished and wrote before it was stopped; then its status."""
    from fmi.reporting.atomic import WRITTEN

    done = sorted({str(p) for p in WRITTEN})
    runs = sorted({str(p.parent) for p in WRITTEN if p.parent.suffix == ".run"})
    what = "nothing was written" if not done else f"written: {', '.join(done)}"
    if runs:
        what = f"finished units kept in {', '.join(runs)} (rerun with --resume to continue)"
    print(f"fmi: {err}; {what}", file=sys.stderr)
    return err.code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        previous = {s: signal.signal(s, _on_stop_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: the signals keep their handlers
        previous = {}
    try:
        return _dispatch(args)
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return _interrupted(Interrupted("SIGINT", 130))
    except Interrupted as err:
        return _interrupted(err)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dispatch(args: argparse.Namespace) -> int:
    handler = {
        "models": _models,
        "recall": _recall,
        "analyses": _analyses,
        "capacity": _capacity,
        "bench": _bench,
        "inspect": _inspect,
        "compare": _compare,
        "edit": _edit,
        "memory": memory_cli.run,
        "sweep": sweep_cli.run,
    }[args.command]
    try:
        _check_outputs(args)
        return handler(args)
    except Interrupted:
        raise
    except FmiError as err:
        print(f"fmi: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the command reads or writes, named by the OS
        where = f" {err.filename}" if err.filename else ""
        print(f"fmi: error:{where} {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
