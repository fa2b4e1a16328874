"""The one writer of HTML reports: a header, captioned Plotly figures, and the data behind them.

Analyses compute data, build ``plotly.graph_objects.Figure`` objects, and hand a :class:`Report`
to :func:`write_report`. Reports open offline: Plotly's JavaScript is written once beside them
(``plotly.min.js``) and referenced by a relative path, so no page fetches anything from the
network. Nothing here calls ``fig.show()``.

User text (task contexts, symbols, labels, prompts, statements, file names) reaches a page in
three places, and each is escaped here, so figure builders pass it raw:

- HTML (title, finding, header, captions, the index): :func:`html.escape`.
- Figure text: plotly.js reads trace names, category ticks, hover text, titles and table cells
  as its own markup (``<a href>`` links, ``<span style>`` with CSS that may fetch ``url(...)``,
  ``<b>``, ``<br>``, entities), so :func:`render` escapes every string of the figure
  (:func:`escaped_figure`) except the builders' own ``hovertemplate`` / ``texttemplate``, whose
  markup is meant; a builder that puts user text *into* a template escapes it with
  :func:`plot_text`.
- The figure's JSON inside its ``<script>``: Plotly's encoder writes ``<``, ``>`` and ``/`` as
  ``\\u003c``, ``\\u003e``, ``\\u002f``, so no string can close the script;
  :func:`render` checks that it stayed so.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from fmi.reporting.atomic import write_json, write_text

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

# Figure strings that are the builders' own plotly.js markup (``%{x}<br>...<extra></extra>``),
# not data: left as they are by :func:`escaped_figure`.
TEMPLATE_KEYS = frozenset({"hovertemplate", "texttemplate"})


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


def plot_text(text: str) -> str:
    """``text`` as plotly.js shows it literally: ``&``, ``<`` and ``>`` as entities, which
    plotly.js decodes for display (``"`` and ``'`` stay: it does not decode ``&quot;``).

    >>> plot_text('<a href="https://x.example">A & B</a>')
    '&lt;a href="https://x.example"&gt;A &amp; B&lt;/a&gt;'
    """
    return html.escape(text, quote=False)


def _escaped(value: Any, key: str | None) -> Any:
    if isinstance(value, str):
        return value if key in TEMPLATE_KEYS else plot_text(value)
    if isinstance(value, dict):
        return {k: _escaped(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v, key) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [_escaped(v, key) for v in value.tolist()]
    return value


def escaped_figure(figure: go.Figure) -> dict[str, Any]:
    """``figure`` as a dict with every string escaped by :func:`plot_text` (trace names, x/y
    categories, text, hover text, titles, annotations, table cells), except the builders' own
    templates (:data:`TEMPLATE_KEYS`): what plotly.js then renders is the text, never markup.

    >>> fig = go.Figure(go.Bar(x=["<b>A</b>"], y=[1], hovertemplate="%{x}<extra></extra>"))
    >>> bar = escaped_figure(fig)["data"][0]
    >>> bar["x"], bar["hovertemplate"]
    (['&lt;b&gt;A&lt;/b&gt;'], '%{x}<extra></extra>')
    """
    return _escaped(figure.to_dict(), None)


def figure_html(figure: go.Figure, div_id: str) -> str:
    """The figure's ``<div>`` and ``<script>`` (Plotly's JavaScript not included), its text
    escaped (:func:`escaped_figure`); ``ValueError`` should a string ever close the script."""
    div = pio.to_html(
        escaped_figure(figure),
        validate=False,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    lowered = div.lower()
    if lowered.count("<script") != 1 or lowered.count("</script") != 1:
        raise ValueError(f"figure {div_id}: its JSON would close its <script> early")
    return div


def ensure_plotly_js(out_dir: Path) -> Path:
    """Write Plotly's bundled JavaScript into ``out_dir`` (once per Plotly version)."""
    path = out_dir / PLOTLY_JS
    code = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(code.encode()):
        write_text(path, code)
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
        div = figure_html(panel.figure, f"{report.name}-{i}")
        parts.append(f"<figure>{div}<figcaption>{html.escape(panel.caption)}</figcaption></figure>")
    return _page(report.title, "\n".join(parts))


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<name>.html`` and its data as ``<name>.json``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_plotly_js(out)
    path = out / f"{report.name}.html"
    doc = {"finding": report.finding, "header": report.header, "data": report.data}
    write_json(out / f"{report.name}.json", doc)
    write_text(path, render(report))
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
    write_text(path, _page(title, body))
    return path
