"""The options of every fmi subcommand, and the parser that holds them."""

from __future__ import annotations

import argparse
from typing import TypedDict

from analyses.cli import memory as memory_cli
from analyses.cli import sweep as sweep_cli

MODEL_HELP = memory_cli.MODEL_HELP
QUICK_MODEL_HELP = MODEL_HELP + " (tiny-gemma with --quick)"


def _recall_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi recall``'s options."""
    r = sub.add_parser("recall", help="write, read and measure the fast memory")
    r.add_argument("--model", default="auto", help=MODEL_HELP)
    r.add_argument("--task", default="builtin", help="'builtin' or a task file (.json)")
    r.add_argument("--modes", default=",".join(modes), help="comma-separated: " + ", ".join(modes))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--seeds",
        help="comma-separated seeds (e.g. 101,102,103): one run per seed, then the mean and "
        "range over seeds (overrides --seed)",
    )
    r.add_argument(
        "--n-train", type=int, help=f"training symbols (builtin task); default {defaults.n_train}"
    )
    r.add_argument(
        "--n-eval", type=int, help=f"held-out symbols (builtin task); default {defaults.n_eval}"
    )
    r.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for smoke tests)")
    r.add_argument("--splits", help="comma-separated evaluation splits to run; default all")
    r.add_argument(
        "--end",
        default="\\n",
        help="text that ends an answer when read (escapes allowed; default '\\n'): a value is "
        "stored for every answer token and for the end token ('' for none)",
    )
    r.add_argument(
        "--seed-value",
        action="store_true",
        help="write as the seed experiment did: one unrefined value at the answer's first token "
        "(one-token labels only; ignores --end)",
    )
    r.add_argument("--json", help="write the results document here")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the finished splits kept beside --json "
        "(in JSON.run/); refused for another configuration or model",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def _analyses_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi analyses``'s options."""
    a = sub.add_parser("analyses", help="every analysis as a Plotly HTML report, plus an index")
    a.add_argument("--model", help=QUICK_MODEL_HELP)
    a.add_argument("--out", help="output directory; default reports/<model>")
    a.add_argument("--only", help="comma-separated subset of the analyses")
    a.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for smoke tests)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument(
        "--resume",
        action="store_true",
        help="skip the analyses an interrupted run finished (kept in OUT/analyses.run/)",
    )


def _compare_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi compare``'s options."""
    c = sub.add_parser("compare", help="the fast memory against baselines, one HTML report")
    c.add_argument("--model", help=QUICK_MODEL_HELP)
    c.add_argument("--task", default="builtin", help="'builtin' or a task file (.json)")
    c.add_argument(
        "--splits", help="comma-separated evaluation splits; default same (a task file: file)"
    )
    c.add_argument("--out", help="output directory; default reports/<model>")
    c.add_argument("--json", help="also write the results document here")
    c.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for smoke tests)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--seeds",
        help="comma-separated seeds (e.g. 101,102,103): one comparison per seed, then each "
        "method's mean and range over seeds (overrides --seed)",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument(
        "--resume",
        action="store_true",
        help="skip the splits an interrupted run finished (kept in OUT/compare.run/)",
    )


def _edit_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi edit``'s options."""
    e = sub.add_parser("edit", help="knowledge editing: every method on the same edits, T held")
    e.add_argument(
        "--data", default="known-cf", help="known-cf, nonce-cf, or a CounterFact / ZsRE file"
    )
    e.add_argument("--format", default="auto", help="counterfact, zsre or auto (for --data FILE)")
    e.add_argument("--methods", help="comma-separated; default: all (fmi edit -h lists them)")
    e.add_argument("--edits", help="comma-separated T (edits held at once); default 1,10,100,1000")
    e.add_argument("--seeds", help="comma-separated edit-order seeds; default 0")
    e.add_argument("--scored", type=int, help="edits scored at every T; default 100")
    e.add_argument("--max-new-tokens", type=int, default=0, help="greedy tokens (0: auto)")
    e.add_argument(
        "--cell-budget", type=float, default=3600.0, help="write seconds per cell; default 3600"
    )
    e.add_argument(
        "--tune-edits",
        type=int,
        default=50,
        help="training edits every tuned method is tuned on (the same ones); default 50",
    )
    e.add_argument("--model", help=QUICK_MODEL_HELP)
    e.add_argument("--out", help="output directory; default reports/<model>")
    e.add_argument("--json", help="also write the results document here")
    e.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")


def _capacity_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi capacity``'s options."""
    k = sub.add_parser("capacity", help="read vs bank size, and LoRA adapters on the same data")
    k.add_argument("--model", help=QUICK_MODEL_HELP)
    k.add_argument("--sizes", help="comma-separated even bank sizes; default 10,100,1000,10000")
    k.add_argument(
        "--lora-sizes", help="sizes (among --sizes) the LoRA probe trains on; '' skips it"
    )
    k.add_argument("--out", help="output directory; default reports/<model>")
    k.add_argument("--json", help="also write the results document here")
    k.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for smoke tests)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument(
        "--from-json", help="rebuild the report from a saved document, measuring nothing"
    )


def _bench_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi bench``'s options."""
    b = sub.add_parser("bench", help="write, generation and retrieval cost, side by side")
    b.add_argument("--model", default="auto", help=MODEL_HELP)
    b.add_argument("--prompts", type=int, default=64, help="statements and questions timed")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is kept)")
    b.add_argument("--json", help="also write the figures here")
    b.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    b.add_argument("--seed", type=int, default=0)


def _inspect_parser(sub, defaults, modes: tuple[str, ...]) -> None:
    """``fmi inspect``'s options."""
    i = sub.add_parser("inspect", help="one read prompt as an offline circuitsvis HTML page")
    i.add_argument("--model", default="auto", help=MODEL_HELP)
    i.add_argument("--context", required=True, help="the binding's context, e.g. 'game A'")
    i.add_argument("--symbol", required=True, help="the invented word to read back")
    i.add_argument("--label", help="write (context, symbol) -> label first (one token)")
    i.add_argument("--prompt", help="inspect this text instead of the read question")
    i.add_argument("--mode", default="dual_key", help="retrieval mode: " + ", ".join(modes))
    i.add_argument("--memory", help="a saved memory (.safetensors); default: fit one")
    i.add_argument("--out", help="page path; default reports/<model>/inspect-<context>-<symbol>")
    i.add_argument("--force", action="store_true", help="inject the top entry even if abstaining")
    i.add_argument("--n-train", type=int, default=defaults.n_train, help="training symbols")
    i.add_argument("--n-eval", type=int, default=defaults.n_eval, help="held-out symbols")
    i.add_argument("--seed", type=int, default=0)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``-h`` shows the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def parser() -> argparse.ArgumentParser:
    """The ``fmi`` argument parser: one subcommand per command, each with its own options."""
    from fmi.experiments.config import RecallConfig
    from fmi.memory.retrieve import MODES

    defaults = RecallConfig()
    p = _Parser(prog="fmi", description="Fast memory for frozen language models.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list registered models and whether each loads here")
    for add in (
        _recall_parser,
        _analyses_parser,
        _compare_parser,
        _edit_parser,
        _capacity_parser,
        _bench_parser,
        _inspect_parser,
    ):
        add(sub, defaults, MODES)
    memory_cli.add_parser(sub)
    sweep_cli.add_parser(sub)
    _every_leaf_quiet(p)
    _every_model_leaf_placed(p)
    return p


def _leaves(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that take a command's options: those without subcommands of their own."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [p]
    return [leaf for a in subs for child in a.choices.values() for leaf in _leaves(child)]


def _every_leaf_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet`` on every command: no progress bars (they go to stderr; results to stdout)."""
    for leaf in _leaves(p):
        if not any("--quiet" in a.option_strings for a in leaf._actions):
            leaf.add_argument("--quiet", action="store_true", help="no progress bars")


def _every_model_leaf_placed(p: argparse.ArgumentParser) -> None:
    """``--revision``, ``--device`` and ``--dtype`` beside every ``--model``: how the model is
    loaded (:func:`fmi.models.registry.load_model`)."""
    for leaf in _leaves(p):
        options = {o for a in leaf._actions for o in a.option_strings}
        if "--model" not in options or "--device" in options:
            continue
        leaf.add_argument(
            "--revision", help="Hub revision: branch, tag or commit (e.g. Pythia's step1000)"
        )
        leaf.add_argument(
            "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N, mps"
        )
        leaf.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")


class Placement(TypedDict):
    """The keywords of ``load_model`` that the ``--revision``, ``--device`` and ``--dtype``
    options give."""

    revision: str | None
    device: str
    dtype: str


def placement(args: argparse.Namespace) -> Placement:
    """The ``revision``, ``device`` and ``dtype`` keywords of ``load_model`` from the options."""
    return {"revision": args.revision, "device": args.device, "dtype": args.dtype}
