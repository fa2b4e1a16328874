"""The capacity report's figures, its one-line finding and its Markdown tables (data in)."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from fmi.reporting.report import Panel

DASH = {"retrieval": "dash", "injection": "dot"}


def _band(rows: list[dict], metric: str) -> dict:
    vals = [r[metric] for r in rows]
    ci = [r["ci95"][metric] for r in rows]
    return {
        "type": "data",
        "symmetric": False,
        "array": [hi - v for v, (_, hi) in zip(vals, ci, strict=True)],
        "arrayminus": [v - lo for v, (lo, _) in zip(vals, ci, strict=True)],
    }


def _by(rows: list[dict], key: str) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def read_panel(curve: list[dict], lora: list[dict]) -> Panel:
    fig = go.Figure()
    for mode, rows in _by(curve, "mode").items():
        x = [r["size"] for r in rows]
        fig.add_scatter(
            x=x, y=[r["read"] for r in rows], name=f"{mode}: read", error_y=_band(rows, "read")
        )
        for metric, dash in DASH.items():
            fig.add_scatter(
                x=x, y=[r[metric] for r in rows], name=f"{mode}: {metric}", line={"dash": dash}
            )
    for rank, rows in _by(lora, "rank").items():
        fig.add_scatter(
            x=[r["size"] for r in rows],
            y=[r["read"] for r in rows],
            name=f"LoRA r={rank}: read",
            error_y=_band(rows, "read"),
            line={"width": 1},
            marker={"symbol": "square"},
        )
    fig.update_layout(
        xaxis={"title": "bindings in the bank (N)", "type": "log"},
        yaxis={"title": "rate", "range": [-0.02, 1.05]},
        height=520,
        title="read vs bank size",
    )
    return Panel(
        fig,
        "Greedy exact match on read prompts vs bank size (95% cluster intervals over symbols), "
        "with the two ways it fails kept apart: retrieval (the top entry is the prompt's own "
        "binding) and injection (read accuracy with the right value injected, which does not "
        "depend on N). "
        "Where read follows retrieval down, retrieval is the bottleneck. Squares: LoRA adapters "
        "trained on the same statements.",
    )


def false_panel(curve: list[dict], lora: list[dict]) -> Panel:
    fig = go.Figure()
    for mode, rows in _by(curve, "mode").items():
        for metric in ("plain", "unrelated", "unrelated_changed"):
            fig.add_scatter(
                x=[r["size"] for r in rows],
                y=[r[metric] for r in rows],
                name=f"{mode}: {metric}",
                error_y=_band(rows, metric),
            )
    for rank, rows in _by(lora, "rank").items():
        fig.add_scatter(
            x=[r["size"] for r in rows],
            y=[r["unrelated_changed"] for r in rows],
            name=f"LoRA r={rank}: unrelated_changed",
            marker={"symbol": "square"},
            line={"width": 1},
        )
    fig.update_layout(
        xaxis={"title": "bindings in the bank (N)", "type": "log"},
        yaxis={"title": "rate (lower is better)", "range": [-0.02, 1.05]},
        height=480,
        title="false activations vs bank size",
    )
    return Panel(
        fig,
        "Plain (the word without its context answered with a bound label), unrelated (a control "
        "question answered with a label) and unrelated_changed (its output changed at all). The "
        "thresholds were calibrated on a 300-entry training bank; a larger bank offers more near "
        "misses.",
    )


def lora_panel(lora: list[dict], law: Any) -> Panel:
    fig = go.Figure()
    for rank, rows in _by(lora, "rank").items():
        x = [r["size"] for r in rows]
        fig.add_scatter(
            x=x, y=[r["loss"] for r in rows], name=f"r={rank}: loss", mode="markers+lines"
        )
        if not isinstance(law, str):
            fig.add_scatter(
                x=x,
                y=[law.predict(N=n, r=rank) for n in x],
                name=f"r={rank}: power law",
                line={"dash": "dot"},
            )
    fit = (
        law if isinstance(law, str) else f"{law.formula()} (R² {law.r2:.2f}, {law.n_points} points)"
    )
    fig.update_layout(
        xaxis={"title": "bindings (N)", "type": "log"},
        yaxis={"title": "final training loss (nats)", "type": "log"},
        height=520,
        title=f"LoRA: loss vs N and r; fit: {fit}",
    )
    return Panel(
        fig,
        "LoRA adapters on every block's MLP output projection, trained on the N statements with "
        "the learning rate and step count tuned per rank on training bindings (with a retention "
        "KL on unrelated training questions), the same at every N: final cross-entropy of the "
        "label (log scale) with the power law "
        f"fitted to the adapters that did not memorize (loss above 0.01 nats; {fit}), dotted "
        "over every size.",
    )


def memorized_panel(lora: list[dict], memory_write: dict[int, float]) -> Panel:
    fig = go.Figure()
    for rank, rows in _by(lora, "rank").items():
        fig.add_scatter(
            x=[r["size"] for r in rows],
            y=[r["write"] for r in rows],
            name=f"LoRA r={rank}",
            error_y=_band(rows, "write"),
        )
    fig.add_scatter(x=list(memory_write), y=list(memory_write.values()), name="fast memory")
    fig.update_layout(
        xaxis={"title": "bindings (N)", "type": "log"},
        yaxis={"title": "write exact match", "range": [-0.02, 1.05]},
        height=480,
        title="the statements themselves: memorized vs written",
    )
    return Panel(
        fig,
        "Greedy exact match on the training statements: LoRA after its step budget, the fast "
        "memory after one forward pass per statement (its write prompts read back).",
    )


def _cell(row: dict, metric: str) -> str:
    v = row[metric]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric in row.get("ci95", {}):
        lo, hi = row["ci95"][metric]
        return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
    return f"{v:.3f}"


CURVE_COLUMNS = (
    "write",
    "read",
    "retrieval",
    "injection",
    "plain",
    "unrelated",
    "unrelated_changed",
)
LORA_COLUMNS = ("write", "read", "plain", "unrelated_changed", "loss")


def markdown_tables(curve: list[dict], lora: list[dict]) -> str:
    """The memory's rows by size and mode, then the LoRA rows by size and rank."""
    lines = [
        "| N | mode | " + " | ".join(CURVE_COLUMNS) + " |",
        "|" + "---|" * (len(CURVE_COLUMNS) + 2),
    ]
    lines += [
        f"| {r['size']} | {r['mode']} | " + " | ".join(_cell(r, m) for m in CURVE_COLUMNS) + " |"
        for r in curve
    ]
    if lora:
        lines += ["", "| N | LoRA rank | params | " + " | ".join(LORA_COLUMNS) + " | train s |"]
        lines.append("|" + "---|" * (len(LORA_COLUMNS) + 4))
        lines += [
            f"| {r['size']} | {r['rank']} | {r['parameters']} | "
            + " | ".join(_cell(r, m) for m in LORA_COLUMNS)
            + f" | {r['seconds']:.0f} |"
            for r in lora
        ]
    return "\n".join(lines)


def table_panel(curve: list[dict], lora: list[dict]) -> Panel:
    cols = [[str(r["size"]) for r in curve], [r["mode"] for r in curve]]
    cols += [[_cell(r, m) for r in curve] for m in CURVE_COLUMNS]
    fig = go.Figure(
        go.Table(
            header={"values": ["N", "mode", *CURVE_COLUMNS]},
            cells={"values": cols, "align": "left", "font": {"size": 11}},
        )
    )
    fig.update_layout(height=120 + 32 * len(curve), margin={"l": 0, "r": 0, "t": 30, "b": 0})
    return Panel(
        fig,
        "Every (size, mode) row with 95% intervals (cluster over symbols; Wilson for plain and "
        "unrelated prompts).",
    )


def finding(curve: list[dict]) -> str:
    """One line: each mode's read at the smallest and largest bank, and retrieval at the largest."""
    parts = []
    for mode, rows in _by(curve, "mode").items():
        a, b = rows[0], rows[-1]
        parts.append(
            f"{mode} read {a['read']:.2f} at N={a['size']} -> {b['read']:.2f} at N={b['size']} "
            f"(retrieval {b['retrieval']:.2f}, injection {b['injection']:.2f})"
        )
    return "; ".join(parts)


def search_panel(search: list[dict]) -> Panel:
    fig = go.Figure()
    for mode, rows in _by(search, "mode").items():
        x = [r["size"] for r in rows]
        fig.add_scatter(x=x, y=[r["matrix_ms"] for r in rows], name=f"{mode}: score matrix")
        fig.add_scatter(
            x=x, y=[r["search_ms"] for r in rows], name=f"{mode}: search", line={"dash": "dash"}
        )
    fig.update_layout(
        xaxis={"title": "bindings in the bank (N)", "type": "log"},
        yaxis={"title": "ms per query", "type": "log"},
        height=440,
        title="retrieval cost on the real bank",
    )
    last = {r["mode"]: r for r in search if r["size"] == max(x["size"] for x in search)}
    counts = "; ".join(
        f"{m}: median rescored " + ", ".join(f"{k} {v:g}" for k, v in r["rescored_median"].items())
        for m, r in last.items()
    )
    return Panel(
        fig,
        "Milliseconds per query to decide the sampled prompts on the bank's own keys: the full "
        "score matrix (score_queries + decide) against the exact int8-prefiltered search "
        f"(read_decide). At the largest bank, entries rescored in float32 per query: {counts}.",
    )


def search_finding(search: list[dict]) -> str:
    """One line: the largest bank's retrieval cost both ways, and whether they agreed."""
    top = max(r["size"] for r in search) if search else 0
    parts = [
        f"{r['mode']} at N={top}: {r['matrix_ms']:.3f} ms/query (score matrix) -> "
        f"{r['search_ms']:.3f} ms (search), same entry for {r['same_entries']}/{r['queries']}"
        for r in search
        if r["size"] == top
    ]
    return "; ".join(parts) or "no searched mode"


def panels(
    curve: list[dict], lora: list[dict], law: Any, search: list[dict] | None = None
) -> list[Panel]:
    memory_write = {r["size"]: r["write"] for r in curve if r["mode"] == curve[0]["mode"]}
    out = [read_panel(curve, lora), false_panel(curve, lora)]
    if search:
        out.append(search_panel(search))
    if lora:
        out += [lora_panel(lora, law), memorized_panel(lora, memory_write)]
    return [*out, table_panel(curve, lora)]
