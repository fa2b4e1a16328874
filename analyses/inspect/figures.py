"""The inspection page: circuitsvis views and tables for one read prompt, as one offline HTML file.

circuitsvis renders each view twice: ``str(html)`` imports its JavaScript from a CDN (fails
offline), ``html.local_src`` inlines the whole 1.3 MB bundle. A page with one attention view per
layer would repeat the bundle per view, so the page inlines it once, as a classic script (which
defines the global ``CircuitsVis``), and keeps only each view's render call. Nothing on the page
comes from the network.

User text (the prompt and its tokens, contexts, symbols, labels, answers) is escaped: in HTML by
:func:`html.escape`; in a view's props, which circuitsvis writes with a bare ``json.dumps``
into its ``<script>`` (a token ``</script>`` would end the script there and run what follows),
by :func:`script_json`, which writes ``<``, ``>`` and ``&`` as ``\\u`` escapes; and the tokens
themselves, which circuitsvis renders as HTML, by :func:`safe_props`.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import circuitsvis
from circuitsvis.utils.render import RenderedHTML

from fmi.reporting.atomic import write_text
from fmi.reporting.report import STYLE, header_html

if TYPE_CHECKING:
    from analyses.inspect.compute import Inspection

PAGE_STYLE = """
table.grid { border-collapse: collapse; font-size: 0.9em; margin: 6px 0 14px; }
table.grid th, table.grid td { border-bottom: 1px solid #e3e3e3; padding: 3px 10px;
                               text-align: left; }
table.grid tr.chosen td { background: #eaf4e4; font-weight: 600; }
.pair { display: flex; gap: 40px; flex-wrap: wrap; }
code.tok { background: #f3f3f3; padding: 0 3px; white-space: pre; }
nav.layers a { margin-right: 8px; }
"""
_UNCLOSED_DIV = re.compile(r'(<div id="circuits-vis-[^"]*"[^>]*?)\s*/>')
# circuitsvis's render call; the props run to the script's last ``)`` (greedy, anchored at the
# closing tag at the end), whatever a string inside them holds
_RENDER_CALL = re.compile(
    r'CircuitsVis\.render\(\s*"circuits-vis-[^"]*",\s*CircuitsVis\.\w+,\s*(?P<props>\{.*\})\s*\)'
    r"\s*</script>\s*$",
    re.DOTALL,
)
# JSON with ensure_ascii writes no U+2028/2029; these three are what HTML reads in a <script>
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


class LocalHTML(RenderedHTML):
    """A circuitsvis view that always displays its self-contained source (never the CDN one), so
    that it shows in Jupyter without a network probe or a download."""

    def __init__(self, local_src: str) -> None:
        super().__init__(local_src, local_src)

    def _repr_html_(self) -> str:
        return self.local_src


@cache
def circuitsvis_js() -> str:
    """circuitsvis's browser bundle, as ``render_local`` inlines it, without its source-map link."""
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "")


def _bundle_script() -> str:
    code = re.sub(r"^//# sourceMappingURL=.*$", "", circuitsvis_js(), flags=re.MULTILINE)
    return f"<script>{code}</script>"


def view_body(view: RenderedHTML) -> str:
    """One view's markup without the inlined bundle (the page carries it once).

    circuitsvis writes ``<div id=…/>``, which HTML parses as an open ``div`` that would swallow
    everything after it; it is closed here. A source without the expected bundle is kept whole.
    The props are rewritten by :func:`safe_props` (user text cannot close the script).
    """
    src = view.local_src
    bundle = circuitsvis_js()
    if bundle in src:
        src = src.replace(bundle, "")
    return _UNCLOSED_DIV.sub(r"\1></div>", safe_props(src))


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>``: no ``<``, ``>`` or ``&`` (written as
    ``\\u003c`` and so on, the same string to JavaScript), so that no string can close the
    script or open a comment.

    >>> script_json({"tokens": ["</script>", "a&b"]})
    '{"tokens": ["\\\\u003c/script\\\\u003e", "a\\\\u0026b"]}'
    """
    out = json.dumps(value)
    for char, escaped in _SCRIPT_UNSAFE.items():
        out = out.replace(char, escaped)
    return out


def safe_props(src: str) -> str:
    """A view's markup with the props of its render call rewritten by :func:`script_json`, the
    tokens HTML-escaped first: circuitsvis shows each token through ``innerHTML`` (its spaces as
    ``&nbsp;``), so a token ``<img/src=x/onerror=...>`` would be an element. (Its hover tooltip
    shows the token as text, so there a token with ``<``, ``>`` or ``&`` reads as entities.)
    ``ValueError`` when no render call is found (its props could not be made safe)."""
    match = _RENDER_CALL.search(src)
    if match is None:
        raise ValueError("unexpected circuitsvis markup: no CircuitsVis.render(...) call found")
    props = json.loads(match["props"])
    if isinstance(props.get("tokens"), list):
        props["tokens"] = [html.escape(t, quote=False) for t in props["tokens"]]
    safe = script_json(props)
    return src[: match.start("props")] + safe + src[match.end("props") :]


def standalone(parts: list[str]) -> LocalHTML:
    """Markup (from :func:`view_body` and plain HTML) preceded by the bundle, for a notebook."""
    return LocalHTML(_bundle_script() + "".join(parts))


def _table(head: list[str], rows: list[list[str]], chosen: int | None = None) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        f"<tr{' class=chosen' if i == chosen else ''}>"
        + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table class='grid'><tr>{cells}</tr>{body}</table>"


def tok(text: str) -> str:
    """A token shown with its whitespace visible."""
    return f"<code class='tok'>{html.escape(repr(text)[1:-1])}</code>"


def _retrieval(ins: Inspection) -> str:
    r = ins.retrieval
    thr = "none" if r.threshold == float("-inf") else f"{r.threshold:.4f}"
    if r.fired:
        verdict = f"fired: entry {r.chosen} (score {r.score:.4f} &ge; threshold {thr})"
    else:
        verdict = f"abstained: best score {r.score:.4f} &lt; threshold {thr}"
    if r.forced:
        verdict += "; forced: the top entry's value is injected anyway"
    rows = [
        [
            str(c.entry),
            html.escape(c.context),
            html.escape(c.symbol),
            html.escape(c.label),
            f"{c.score:.4f}",
            f"{c.symbol_sim:.4f}",
            f"{c.context_sim:.4f}",
        ]
        for c in r.candidates
    ]
    chosen = next((i for i, c in enumerate(r.candidates) if c.entry == r.chosen), None)
    table = _table(
        ["entry", "context", "symbol", "label", f"{r.mode} score", "symbol sim", "context sim"],
        rows,
        chosen,
    )
    return (
        f"<h2>Retrieval ({html.escape(r.mode)})</h2><p>{verdict}. Memory of {ins.memory_size} "
        f"entries; oracle gate (context named in the prompt): {html.escape(str(r.gate))}. "
        f"Injected at <code>{html.escape(ins.inject_site)}</code>, answer position: "
        f"alpha {ins.alpha:.3g} &times; value, |injected| {ins.injected_norm:.3g} = "
        f"{ins.injected_norm / max(ins.answer_norm, 1e-12):.3f} &times; |h| "
        f"({ins.answer_norm:.3g}).</p>{table}"
        "<p>Top entries by the mode's score; symbol / context sim are the dual-key channels "
        "(token MaxSim at the early site).</p>"
    )


def _answers(ins: Inspection) -> str:
    def top(entries) -> str:
        return _table(["token", "p"], [[tok(t.text), f"{t.prob:.4g}"] for t in entries])

    target = tok(ins.target_text)
    return (
        f"<h2>Next token at the answer position</h2><p>{_nothing(ins)}Target {target}: p "
        f"{ins.target_prob_before:.4g} without memory, {ins.target_prob_after:.4g} with.</p>"
        f"<div class='pair'><div><h3>without memory</h3>{top(ins.top_before)}</div>"
        f"<div><h3>with memory</h3>{top(ins.top_after)}</div></div>"
        f"<p>Greedy continuation without memory: {tok(ins.greedy_before)}<br>"
        f"with memory: {tok(ins.greedy_after)}</p>"
    )


def _nothing(ins: Inspection) -> str:
    if ins.retrieval.injected:
        return ""
    return (
        "The mode abstained, so nothing is injected and nothing changes here (the API's "
        "<code>force=True</code> or <code>fmi inspect --force</code> injects the top entry). "
    )


def _delta(ins: Inspection) -> str:
    return (
        f"<h2>Effect of the memory per position</h2><p>{_nothing(ins)}Each token is coloured "
        "by &Delta; log P(next token) when the injected vector is added at that position "
        f"alone (the last token: the target {tok(ins.target_text)}). Hover for values. At the "
        "answer position &Delta; = "
        f"{float(ins.delta_logprob[-1]):+.4f}.</p>{view_body(ins.delta_view())}"
    )


def _attention(ins: Inspection) -> str:
    n = ins.patterns.shape[0]
    nav = " ".join(f"<a href='#layer-{i}'>L{i}</a>" for i in range(n))
    blocks = "".join(
        f"<h3 id='layer-{i}'>layer {i} (<code>blocks.{i}.attn.hook_pattern</code>)</h3>"
        + view_body(ins.attention_layer(i))
        for i in range(n)
    )
    return (
        f"<h2>Attention patterns</h2><p>Every head, per layer, on the read prompt (without "
        f"memory: the memory acts after attention).</p><nav class='layers'>{nav}</nav>{blocks}"
    )


def render_page(ins: Inspection, header: dict[str, Any]) -> str:
    """The whole page: header, retrieval, answers, per-position effect, attention, data."""
    title = f"fmi inspect: {ins.prompt}"
    data = html.escape(json.dumps(ins.to_dict(), indent=1))
    body = (
        f"<h1>{html.escape(title)}</h1><p class='finding'>{html.escape(ins.summary())}</p>"
        f"{header_html(header)}{_retrieval(ins)}{_answers(ins)}{_delta(ins)}{_attention(ins)}"
        f"<details><summary>numbers</summary><pre>{data}</pre></details>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}{PAGE_STYLE}</style>"
        f"{_bundle_script()}</head><body>{body}</body></html>\n"
    )


def write_inspection(inspection: Inspection, path: str | Path, header: dict[str, Any]) -> Path:
    """Write the self-contained page to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render_page(inspection, header))
    return out
