"""The comparison's figures, its one-line finding and its Markdown table (data in, figures out)."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fmi.reporting.report import Panel

COLUMNS = ("write", "read", "plain", "unrelated", "unrelated_changed")


def _cell(summary: dict, metric: str) -> str:
    value = summary[metric]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    lo, hi = summary["ci95"][metric]
    return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"


def _cost(row: dict) -> tuple[str, str, str]:
    c = row["cost"]
    return f"{c['forward']:g}", f"{c['backward']:g}", f"{c['seconds']:.1f}"


def markdown_table(rows: list[dict]) -> str:
    """Method, the five metrics with 95% intervals, and the write cost, one line per method."""
    head = "| method | " + " | ".join(COLUMNS) + " | fwd | bwd | write s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in rows:
        cells = [_cell(r["summary"], m) for m in COLUMNS]
        lines.append(
            f"| {r['method']} | " + " | ".join(cells) + " | " + " | ".join(_cost(r)) + " |"
        )
    return "\n".join(lines)


def _table(name: str, rows: list[dict]) -> Panel:
    cols = [[r["method"] for r in rows]]
    cols += [[_cell(r["summary"], m) for r in rows] for m in COLUMNS]
    costs = [_cost(r) for r in rows]
    cols += [[c[i] for c in costs] for i in range(3)]
    cols.append([r["cost"]["note"] for r in rows])
    fig = go.Figure(
        go.Table(
            columnwidth=[190] + [120] * len(COLUMNS) + [45, 45, 60, 260],
            header={"values": ["method", *COLUMNS, "fwd", "bwd", "write s", "write cost"]},
            cells={"values": cols, "align": "left", "font": {"size": 11}},
        )
    )
    fig.update_layout(height=100 + 60 * len(rows), margin={"l": 0, "r": 0, "t": 30, "b": 0})
    fig.update_layout(title=f"split {name}")
    return Panel(
        fig,
        f"Split {name}: greedy exact match (word level) with 95% intervals (reads: cluster over "
        "symbols; plain, unrelated: Wilson); higher is "
        "better for write and read, lower for plain, unrelated and unrelated_changed. fwd/bwd "
        "count forward and backward passes per written binding (steering: in all, once), write s "
        "the measured wall time of writing the split.",
    )


def _bars(name: str, rows: list[dict]) -> Panel:
    fig = go.Figure()
    for metric in ("read", "plain", "unrelated_changed"):
        vals = [r["summary"][metric] for r in rows]
        ci = [r["summary"]["ci95"][metric] for r in rows]
        fig.add_bar(
            name=metric,
            x=[r["method"] for r in rows],
            y=vals,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [hi - v for v, (_, hi) in zip(vals, ci, strict=True)],
                "arrayminus": [v - lo for v, (lo, _) in zip(vals, ci, strict=True)],
            },
        )
    fig.update_layout(
        barmode="group", yaxis={"range": [0, 1.05]}, height=480, title=f"split {name}"
    )
    return Panel(
        fig, f"Split {name}: read (want high) next to plain and unrelated_changed (want low)."
    )


def _epsilon(name: str, curve: dict) -> Panel:
    pts = curve["curve"]
    fig = go.Figure()
    for metric in ("unrelated_changed", "plain"):
        fig.add_scatter(
            x=[p[metric] for p in pts],
            y=[p["read"] for p in pts],
            mode="lines+markers",
            name=f"read vs {metric}",
            text=[f"eps {p['epsilon']:.3f}" for p in pts],
        )
    chosen = min(pts, key=lambda p: abs(p["epsilon"] - curve["chosen"]))
    fig.add_scatter(
        x=[chosen["unrelated_changed"]],
        y=[chosen["read"]],
        mode="markers",
        marker={"size": 14, "symbol": "star"},
        name=f"chosen (eps_init {curve['chosen']:.3f})",
    )
    fig.update_layout(
        xaxis={"title": "false activation rate", "range": [-0.02, 1.02]},
        yaxis={"title": "read exact match", "range": [-0.02, 1.02]},
        height=460,
        title=f"GRACE's initial radius on training data (tuning for split {name})",
    )
    return Panel(
        fig,
        "GRACE's initial deferral radius eps_init, tried on training symbols with the memory's "
        "correction values: each point is one radius (hover for it). The star is the radius "
        "used on the evaluation split.",
    )


def _steps(name: str, rows: list[dict]) -> Panel:
    fig = go.Figure()
    for family in ("iterated value", "gradient-written"):
        sel = [r for r in rows if r["family"] == family]
        for metric, dash in (("read", None), ("write", "dot")):
            fig.add_scatter(
                x=[r["detail"]["steps"] for r in sel],
                y=[r["summary"][metric] for r in sel],
                mode="lines+markers",
                line={"dash": dash},
                name=f"{family}: {metric}",
            )
    fig.update_layout(
        xaxis={"title": "gradient steps", "type": "log"},
        yaxis={"title": "exact match", "range": [-0.02, 1.02]},
        height=440,
        title=f"accuracy vs refinement steps, split {name}",
    )
    return Panel(
        fig,
        "Iterated value: closed-form steps on the output cross-entropy (step 1 is the memory's own "
        "value). GradMem: backprop through the frozen blocks above its site. Both read with the "
        "dual_key retrieval.",
    )


def _prefix(name: str, prefix: dict) -> Panel:
    fig = go.Figure()
    pts = prefix["curve"]
    for k in sorted({p["K"] for p in pts}):
        sel = sorted((p for p in pts if p["K"] == k), key=lambda p: p["steps"])
        for metric, dash in (("read", None), ("unrelated_changed", "dot")):
            fig.add_scatter(
                x=[p["steps"] for p in sel],
                y=[p[metric] for p in sel],
                mode="lines+markers",
                line={"dash": dash},
                name=f"K={k}: {metric}",
            )
    fig.update_layout(
        xaxis={"title": "Adam steps"},
        yaxis={"title": "rate", "range": [-0.02, 1.02]},
        height=420,
        title=f"GradMem soft prefix: read vs memory tokens K and steps, split {name}",
    )
    return Panel(
        fig,
        "K memory tokens prepended to every question, optimised on all of the split's write "
        f"statements at once (learning rate per K tuned on training symbols: "
        f"{prefix['tuning']['budget']}). Read (solid) and unrelated answers changed (dotted).",
    )


def _sweeps(name: str, sweeps: dict) -> Panel:
    methods = list(sweeps)
    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=methods, shared_yaxes=True)
    for i, method in enumerate(methods):
        s = sweeps[method]
        fig.add_heatmap(
            z=s["accuracy"],
            x=[str(a) for a in s["alphas"]],
            y=s["sites"],
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            showscale=i == 0,
            name=method,
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title_text="alpha", row=1, col=i + 1)
    fig.update_layout(height=440, title=f"steering sweep on training reads, split {name}")
    return Panel(
        fig,
        "Training read accuracy (first token) of each steering site and scale (alpha: fraction of "
        "the median residual norm), with the read's own label vector; the best cell is used "
        "(ties: the smallest alpha).",
    )


def _entropy(name: str, ent: dict, rows: list[dict]) -> Panel:
    fig = go.Figure()
    for kind, vals in ent["by_kind"].items():
        fig.add_histogram(x=vals, name=f"{kind} questions", opacity=0.6, nbinsx=30)
    fig.add_histogram(x=ent["write"], name="write statements", opacity=0.6, nbinsx=30)
    for kind, tau in ent["thresholds"].items():
        fig.add_vline(x=tau, line_dash="dash", annotation_text=f"{kind} gate {tau:.2f}")
    fig.update_layout(barmode="overlay", xaxis={"title": "next-token entropy (nats)"}, height=420)
    gate = next(r["detail"] for r in rows if r["family"] == "entropy gate")
    opened = ", ".join(f"{k} {v:.2f}" for k, v in gate["question_gate_open"].items())
    return Panel(
        fig,
        f"Split {name}: the frozen model's next-token entropy at the answer position, and the "
        "gates' thresholds chosen on training prompts. A gate saves work only where it stays "
        f"shut. Statements stored: {gate['writes_stored']:.2f}; question gate open on: {opened}; "
        f"retrievals saved: {gate['retrievals_saved']:.2f} of {gate['prompts']} prompts.",
    )


def panels(results: dict[str, dict]) -> list[Panel]:
    out = []
    for name, r in results.items():
        out += [_table(name, r["rows"]), _bars(name, r["rows"]), _epsilon(name, r["grace"])]
        out += [_steps(name, r["rows"]), _sweeps(name, r["steering_sweeps"])]
        if r.get("soft_prefix", {}).get("curve"):
            out.append(_prefix(name, r["soft_prefix"]))
        out.append(_entropy(name, r["entropy"], r["rows"]))
    return out


def finding(results: dict[str, dict]) -> str:
    """One line: the best read among baselines and the fast memory's, with their false rates."""
    parts = []
    for name, r in results.items():
        rows = r["rows"]
        mem = max(  # never an oracle row: the finding reports what a real memory does
            (x for x in rows if x["family"] == "fast memory" and "(oracle)" not in x["method"]),
            key=lambda x: x["summary"]["read"],
        )
        base = [x for x in rows if x["family"] not in ("fast memory", "in-context")]
        best = max(base, key=lambda x: x["summary"]["read"] - x["summary"]["unrelated_changed"])

        def say(x: dict[str, Any]) -> str:
            s = x["summary"]
            return (
                f"{x['method']} read {s['read']:.2f} (plain {s['plain']:.2f}, unrelated changed "
                f"{s['unrelated_changed']:.2f})"
            )

        parts.append(
            f"{name}: {say(mem)}; best other method outside the in-context ceiling: {say(best)}"
        )
    return " | ".join(parts)
