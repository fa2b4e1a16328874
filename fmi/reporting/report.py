"""The one writer of HTML reports: a header, captioned Plotly figures, and the data behind them.

Analyses compute data, build ``plotly.graph_objects.Figure`` objects, and hand a :class:`Report`
to :func:`write_report`. Reports open offline: Plotly's JavaScript is written once beside them
(``plotly.min.js``) and referenced by a relative path, so no page fetches anything from the
network. Nothing here calls ``fig.show()``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

PLOTLY_JS = "plotly.min.js"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 24px auto; padding: 0 16px;
       color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
.finding { font-size: 1.05em; background: #f3f6fb; border-left: 4px solid #4a6fa5;
           padding: 8px 12px; margin: 12px 0 20px; }
table.header { border-collapse: collapse; font-size: 0.88em; margin-bottom: 8px; }
table.header td { border-bottom: 1px solid #e3e3e3; padding: 3px 10px; vertical-align: top; }
table.header td:first-child { color: #555; white-space: nowrap; }
figure { margin: 28px 0; }
figcaption { font-size: 0.93em; color: #333; margin-top: 4px; }
details pre { font-size: 0.8em; background: #fafafa; padding: 8px; overflow-x: auto; }
ul.index li { margin: 10px 0; }
"""


@dataclass(frozen=True)
class Panel:
    """One figure and the sentence that says what to look for in it."""

    figure: go.Figure
    caption: str


@dataclass(frozen=True)
class Report:
    """An analysis' output: ``name`` is the file stem, ``finding`` one line for the index."""

    name: str
    title: str
    finding: str
    panels: tuple[Panel, ...]
    header: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"report name must be an identifier, got {self.name!r}")
        if "\n" in self.finding:
            raise ValueError("a finding is one line")


def ensure_plotly_js(out_dir: Path) -> Path:
    """Write Plotly's bundled JavaScript into ``out_dir`` (once per Plotly version)."""
    path = out_dir / PLOTLY_JS
    code = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(code.encode()):
        path.write_text(code, encoding="utf-8")
    return path


def summary_rows(header: dict[str, Any]) -> list[tuple[str, str]]:
    """The header facts a reader needs at a glance (the full header sits below, folded)."""
    model = header.get("model", {})
    rows = [
        ("model", f"{model.get('name', '?')} (requested {model.get('requested', '?')})"),
        ("source", str(model.get("source", "?"))),
        ("weight processing", json.dumps(model.get("processing", {}))),
    ]
    for key in ("sites", "alpha", "seeds", "task_sizes", "wall_seconds"):
        if key in header:
            rows.append((key.replace("_", " "), _short(header[key])))
    versions = header.get("versions", {})
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    rows.append(("git revision", str(header.get("git", "unknown"))))
    rows.append(("created", str(header.get("created", "?"))))
    return rows


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def header_html(header: dict[str, Any]) -> str:
    """The header as a summary table with the full JSON folded below it."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in summary_rows(header)
    )
    full = html.escape(json.dumps(header, indent=1, default=str))
    return (
        f'<table class="header">{rows}</table>'
        f"<details><summary>full header (configuration, fitted state)</summary>"
        f"<pre>{full}</pre></details>"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<script src='{PLOTLY_JS}'></script><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def render(report: Report) -> str:
    """The report as one HTML page (expects ``plotly.min.js`` beside it)."""
    parts = [
        f"<h1>{html.escape(report.title)}</h1>",
        f'<p class="finding">{html.escape(report.finding)}</p>',
        header_html(report.header),
    ]
    for i, panel in enumerate(report.panels):
        div = panel.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"{report.name}-{i}",
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f"<figure>{div}<figcaption>{html.escape(panel.caption)}</figcaption></figure>")
    return _page(report.title, "\n".join(parts))


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<name>.html`` and its data as ``<name>.json``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_plotly_js(out)
    path = out / f"{report.name}.html"
    path.write_text(render(report), encoding="utf-8")
    doc = {"finding": report.finding, "header": report.header, "data": report.data}
    (out / f"{report.name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def write_index(
    title: str,
    entries: Sequence[tuple[str, str, str]],
    header: dict[str, Any],
    out_dir: str | Path,
) -> Path:
    """``index.html`` linking each ``(file name, title, one-line finding)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_plotly_js(out)
    items = "".join(
        f"<li><a href='{html.escape(href)}'>{html.escape(name)}</a>: {html.escape(finding)}</li>"
        for href, name, finding in entries
    )
    body = f"<h1>{html.escape(title)}</h1>{header_html(header)}<ul class='index'>{items}</ul>"
    path = out / "index.html"
    path.write_text(_page(title, body), encoding="utf-8")
    return path
