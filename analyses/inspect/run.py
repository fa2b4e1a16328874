"""``fmi inspect``: build or load a memory holding the binding asked about, inspect its read
prompt with :func:`analyses.inspect.compute.inspect_prompt`, and write the circuitsvis page."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analyses.inspect.figures import write_inspection
from fmi.errors import ConfigError
from fmi.experiments.queries import unique_bindings
from fmi.experiments.tasks import Binding, Split, Task, Templates
from fmi.memory.entry import Entry
from fmi.memory.retrieve import check_modes
from fmi.memory.store import FastMemory
from fmi.memory.write import write

if TYPE_CHECKING:
    from analyses.prepare import Setup


from analyses.inspect.compute import Inspection, inspect_prompt, label_target

SEARCH_ORDER = ("same", "new_game", "new_lab", "paraphrase", "shared_suffix", "crowded", "train")


# --------------------------------------------------------------------------- the memory


def stored_entry(memory: FastMemory, context: str, symbol: str) -> Entry | None:
    """The entry binding ``symbol`` in ``context``, if the memory holds one."""
    return next((e for e in memory.entries if (e.context, e.symbol) == (context, symbol)), None)


def require_entry(memory: FastMemory, context: str, symbol: str) -> Entry:
    """The stored entry, or a ``ConfigError`` naming the problem and a few stored pairs."""
    entry = stored_entry(memory, context, symbol)
    if entry is None:
        pairs = list(dict.fromkeys((e.context, e.symbol) for e in memory.entries))
        shown = ", ".join(f"({c}, {s})" for c, s in pairs[:6])
        raise ConfigError(
            f"symbol {symbol!r} is not stored for context {context!r} in this memory "
            f"({len(memory)} entries) and no label was given to write it (--label); stored "
            f"(context, symbol) pairs include {shown}"
        )
    return entry


def add_binding(model, memory: FastMemory, binding: Binding, templates: Templates) -> FastMemory:
    """``memory`` with ``binding`` written into it (one frozen forward, the memory's sites)."""
    enc = memory.encoder
    w = write(
        model,
        [binding],
        templates,
        symbol_site=enc.symbol_site,
        token_site=enc.token_site,
        inject_site=memory.inject_site,
    )
    return replace(
        memory,
        entries=[*memory.entries, *w.entries],
        values=torch.cat([memory.values, w.values]),
        symbol_keys=torch.cat([memory.symbol_keys, w.symbol_keys]),
        token_keys=torch.cat([memory.token_keys, w.token_keys]),
        token_owner=torch.cat([memory.token_owner, w.token_owner + len(memory)]),
        token_role=torch.cat([memory.token_role, w.token_role]),
    )


def bank_for(task: Task, context: str, symbol: str) -> Split:
    """The split a memory is written from: the first held-out split (then ``train``) that binds
    ``symbol`` in ``context``, else ``same`` (one bank per split, as evaluation writes)."""
    splits = {s.name: s for s in (task.train, *task.splits)}
    for name in SEARCH_ORDER:
        split = splits.get(name)
        if split is not None and any(
            (b.context, b.symbol) == (context, symbol) for b in split.bindings
        ):
            return split
    return task.split("same") if "same" in splits else task.splits[0]


def memory_from_setup(
    setup: Setup, context: str, symbol: str, label: str | None = None
) -> tuple[FastMemory, Templates]:
    """Write a memory with the fitted encoder, thresholds and alpha (no refit): the bank of
    :func:`bank_for`, with ``(context, symbol) -> label`` written in (replacing any stored label)
    when ``label`` is given."""
    from fmi.memory.write import write_memory

    split = bank_for(setup.task, context, symbol)
    bindings = unique_bindings(split.bindings)
    if label is not None:
        label_target(setup.model.tokenizer, split.templates, label)
        bindings = [b for b in bindings if (b.context, b.symbol) != (context, symbol)]
        bindings.append(Binding(context, symbol, label))
    _, memory = write_memory(setup.model, bindings, split.templates, setup.fitted, setup.cfg.recall)
    return memory, split.templates


def inspect_from_setup(
    setup: Setup,
    context: str,
    symbol: str,
    label: str | None = None,
    prompt: str | None = None,
    mode: str = "dual_key",
    *,
    force: bool = False,
) -> Inspection:
    """Inspect the read prompt of ``(context, symbol)`` (or ``prompt``) with a memory written
    from ``setup`` (see :func:`memory_from_setup`); scored on the stored label."""
    check_modes([mode])
    memory, templates = memory_from_setup(setup, context, symbol, label)
    entry = require_entry(memory, context, symbol)
    text = prompt or templates.prompt("read", Binding(context, symbol, entry.label))
    return inspect_prompt(
        setup.model,
        memory,
        text,
        target_label=entry.label,
        mode=mode,
        force=force,
        templates=templates,
    )


# --------------------------------------------------------------------------- fmi inspect


def slug(text: str) -> str:
    """``"game A"`` -> ``"game-a"``: safe in a file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def default_path(model_name: str, context: str, symbol: str) -> Path:
    return Path("reports") / model_name / f"inspect-{slug(context)}-{slug(symbol)}.html"


def run_inspect(
    *,
    model: str,
    context: str,
    symbol: str,
    label: str | None = None,
    prompt: str | None = None,
    mode: str = "dual_key",
    memory_path: str | Path | None = None,
    out: str | Path | None = None,
    n_train: int = 150,
    n_eval: int = 40,
    seed: int = 0,
    force: bool = False,
    announce: Callable[[str], None] = print,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> tuple[Path, Inspection]:
    """``fmi inspect``: load a saved memory (``memory_path``) or fit one on the builtin training
    split and write the held-out bank; inspect; write the page. Returns its path.

    ``label`` is checked first (one token). A fitted memory gets ``(context, symbol) -> label``
    written in; a loaded one only when it lacks the pair (a stored label is kept, and ``label``
    is then just the token the answer position is scored on)."""
    from analyses.prepare import AnalysisConfig, prepare
    from fmi.models.registry import load_model
    from fmi.reporting.provenance import header

    check_modes([mode])
    start = time.perf_counter()
    loaded = load_model(
        model, seed=seed, announce=announce, revision=revision, device=device, dtype=dtype
    )
    templates = Templates()
    if label is not None:  # before a fit of minutes, not after
        label_target(loaded.tokenizer, templates, label)
    settings: dict[str, Any] = {"context": context, "symbol": symbol, "label": label}
    settings |= {"prompt": prompt, "mode": mode, "force": force}
    if memory_path is None:
        cfg = AnalysisConfig(model=model, n_train=n_train, n_eval=n_eval, seed=seed)
        announce(f"fmi: fitting the memory on {loaded.name} (training split only)")
        setup, _ = prepare(cfg, model=loaded, announce=announce)
        ins = inspect_from_setup(setup, context, symbol, label, prompt, mode, force=force)
        head = setup.header(time.perf_counter() - start, inspect=settings)
    else:
        memory = FastMemory.load(memory_path, loaded)
        if label is not None and stored_entry(memory, context, symbol) is None:
            memory = add_binding(loaded, memory, Binding(context, symbol, label), templates)
        entry = require_entry(memory, context, symbol)
        text = prompt or templates.prompt("read", Binding(context, symbol, entry.label))
        ins = inspect_prompt(
            loaded, memory, text, target_label=label or entry.label, mode=mode, force=force
        )
        head = header(
            loaded,
            {**settings, "memory": str(memory_path), "seed": seed},
            sites={
                "symbol_key": memory.encoder.symbol_site,
                "token_key": memory.encoder.token_site,
                "inject": memory.inject_site,
            },
            alpha={"alpha": memory.alpha},
            wall_seconds=round(time.perf_counter() - start, 1),
        )
    path = write_inspection(ins, out or default_path(loaded.slug, context, symbol), head)
    return path, ins
