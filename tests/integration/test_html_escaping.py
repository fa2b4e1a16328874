"""User text never runs on a page: contexts, symbols, labels, prompts and statements holding
markup are escaped in the HTML, in the figures' text (which plotly.js reads as its own markup)
and in the JSON inside every ``<script>`` (Plotly's figures, circuitsvis's views).

A page passes :func:`assert_inert` when it holds no literal ``<script>alert(1)</script>``, no
script element beyond the ones it is built with (a ``</script>`` in embedded JSON would end
that script and start another), no ``<img>``, ``on...=`` attribute or ``javascript:`` / remote
link in its markup, every ``onerror=`` inside escaped text, and, in every figure, no string
(templates aside) that plotly.js would render as markup. Where headless Chromium is available
the pages are also opened: no dialog, no request off the file system, the payloads shown as
text.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from fmi.reporting.report import (
    TEMPLATE_KEYS,
    Panel,
    Report,
    plot_text,
    write_index,
    write_report,
)

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = "</script><script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_LINK = '<a href="javascript:alert(1)">js</a>'
REMOTE = (  # plotly.js would make a live link, and a style whose url() is fetched
    '<a href="https://evil.example/">link</a>'
    '<span style="background:url(https://evil.example/x.png)">css</span>'
)
PAYLOADS = (SCRIPT, BREAKOUT, IMG, JS_LINK, REMOTE)
ESCAPED_ONERROR = re.compile(r"(&lt;|\\u003c|\\u0026lt;)img src=x $")  # entity, JSON escape, both


# --------------------------------------------------------------------------- the checks


class _Scan(HTMLParser):
    """Every start tag with its attributes, and every script element's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def scan(page: str) -> _Scan:
    parser = _Scan()
    parser.feed(page)
    parser.close()
    return parser


def assert_inert(page: str, scripts: int, trusted: tuple[str, ...] = ()) -> _Scan:
    """``page`` holds no executable copy of the payloads and exactly ``scripts`` script
    elements; ``trusted``: script texts of our own (a library bundle) not searched for markup."""
    assert SCRIPT not in page
    found = scan(page)
    assert len(found.scripts) == scripts, f"{len(found.scripts)} script elements, not {scripts}"
    for tag, attrs in found.tags:
        assert tag != "img", attrs
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            link = (value or "").strip().lower()
            if name in ("href", "src"):
                assert not link.startswith(("javascript:", "http:", "https:", "//")), link
    for text in found.scripts:
        if text in trusted:
            continue
        for opener in ("<script", "</script", "<!--", "<img", "<a "):
            assert opener not in text.lower(), f"{opener!r} inside a script: {text[:300]}"
    ours = page
    for text in trusted:
        ours = ours.replace(text, "")
    for m in re.finditer("onerror=", ours):
        before = ours[max(0, m.start() - 40) : m.start()]
        assert ESCAPED_ONERROR.search(before), f"unescaped onerror= after {before!r}"
    return found


def plotly_figures(page: str) -> list[tuple[list, dict]]:
    """The (data, layout) of every ``Plotly.newPlot`` call, decoded from the page's JSON."""
    decoder = json.JSONDecoder()
    out = []
    for m in re.finditer(r"Plotly\.newPlot\(\s*", page):
        pos = m.end()
        values = []
        for _ in range(3):  # the div id, the data, the layout
            value, pos = decoder.raw_decode(page, pos)
            values.append(value)
            pos = re.compile(r"\s*,\s*").match(page, pos).end()
        out.append((values[1], values[2]))
    return out


def strings(value: Any, key: str | None = None):
    """``(key, string)`` for every string in a decoded figure."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v, key)


def assert_figures_show_text(page: str, figures: int, shown: tuple[str, ...]) -> None:
    """``figures`` Plotly figures whose strings hold no markup for plotly.js (templates aside)
    and show each of ``shown`` literally (escaped, so plotly.js decodes it back to the text)."""
    found = plotly_figures(page)
    assert len(found) == figures
    texts = []
    for data, layout in found:
        for key, text in strings([data, layout]):
            if key not in TEMPLATE_KEYS:
                assert "<" not in text and ">" not in text, (key, text)
                texts.append(text)
    blob = "\n".join(texts)
    for payload in shown:
        assert plot_text(payload) in blob, payload


def browser_check(path: Path) -> dict[str, Any] | None:
    """Open ``path`` offline in headless Chromium: dialogs, requests off the file system, and
    what the figures hold; ``None`` when no browser is available."""
    try:
        from playwright.sync_api import sync_playwright

        from fmi.reporting.browser import CHROMIUM_ARGS, chromium_path

        binary = chromium_path()
    except Exception:  # noqa: BLE001 - no browser here: the static checks stand alone
        return None
    got: dict[str, Any] = {"dialogs": [], "remote": [], "errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (got["dialogs"].append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: got["errors"].append(str(e)))
            page.route(
                "**/*",
                lambda r: (
                    r.continue_()
                    if r.request.url.startswith("file:")
                    else (got["remote"].append(r.request.url), r.abort())
                ),
            )
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.wait_for_timeout(800)
            got["images"] = page.evaluate("document.querySelectorAll('img').length")
            got["plot_links"] = page.evaluate(
                "document.querySelectorAll('.js-plotly-plot a').length"
            )
            got["plot_styles"] = page.evaluate(
                "[...document.querySelectorAll('.js-plotly-plot tspan[style]')]"
                ".map(t => t.getAttribute('style'))"
            )
            got["plot_text"] = page.evaluate(
                "[...document.querySelectorAll('.js-plotly-plot text')]"
                ".map(t => t.textContent).join('\\n')"
            )
            got["body_text"] = page.evaluate("document.body.innerText")
            got["injected"] = page.evaluate(
                "[...document.querySelectorAll(\"[style*='evil.example'], a[href*='evil.example'],"
                " a[href^='javascript'], img\")].map(e => e.outerHTML)"
            )
        finally:
            browser.close()
    return got


def assert_browser_inert(got: dict[str, Any] | None) -> None:
    if got is None:
        return
    assert not got["dialogs"], got["dialogs"]
    assert not got["remote"], got["remote"]
    assert not got["errors"], got["errors"]
    assert got["images"] == 0
    assert not got["injected"], got["injected"]


# --------------------------------------------------------------------------- task files


def test_task_files_take_markup_as_text(tmp_path):
    """The parser refuses no character: markup in a task file reaches the reports as text."""
    from fmi.experiments.taskfile import load_task_file

    path = tmp_path / "task.json"
    doc = {
        "name": SCRIPT,
        "bindings": [{"context": SCRIPT, "symbol": IMG, "label": BREAKOUT}],
        "unrelated": [JS_LINK],
    }
    path.write_text(json.dumps(doc))
    task = load_task_file(path, n_train=12)
    b = task.split("file").bindings[0]
    assert (task.name, b.context, b.symbol, b.label) == (SCRIPT, SCRIPT, IMG, BREAKOUT)
    assert task.split("file").unrelated == (JS_LINK,)


# --------------------------------------------------------------------------- report pages


def _payload_figures() -> tuple[go.Figure, go.Figure]:
    fig = make_subplots(rows=1, cols=2, subplot_titles=[SCRIPT, IMG])
    for i, p in enumerate(PAYLOADS):
        fig.add_bar(
            x=[p, f"{p} #{i}"],
            y=[i + 1, i + 2],
            name=p,
            text=[p, p],
            hovertext=[p, p],
            row=1,
            col=1,
        )
        fig.add_scatter(
            x=[i],
            y=[i],
            name=f"scatter {p}",
            customdata=[p],
            hovertemplate=f"{plot_text(p)}: %{{customdata}}<extra></extra>",
            row=1,
            col=2,
        )
    fig.update_layout(title=BREAKOUT, xaxis={"title": IMG}, yaxis={"title": REMOTE})
    fig.add_annotation(text=JS_LINK, x=0, y=0, row=1, col=2)
    table = go.Figure(go.Table(header={"values": [SCRIPT]}, cells={"values": [list(PAYLOADS)]}))
    return fig, table


def test_report_escapes_every_user_string(tmp_path):
    fig, table = _payload_figures()
    rep = Report(
        "payload",
        f"title {SCRIPT}",
        f"finding {BREAKOUT} {IMG}",
        (Panel(fig, f"caption {SCRIPT} {IMG}"), Panel(table, f"caption {JS_LINK}")),
        {"model": {"name": SCRIPT, "requested": IMG}, "task": BREAKOUT, "sites": {IMG: REMOTE}},
        {"contexts": list(PAYLOADS)},
    )
    path = write_report(rep, tmp_path)
    page = path.read_text()
    found = assert_inert(page, scripts=1 + 2)  # plotly.min.js, one per figure
    assert [s for s in found.scripts if s.strip()][0].lstrip().startswith("window.PLOTLYENV")
    assert_figures_show_text(page, 2, PAYLOADS)
    assert f"title {plot_text(SCRIPT)}" in page  # escaped in the HTML as well
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["data"]["contexts"] == list(PAYLOADS)  # the data file keeps the text itself

    index = write_index(SCRIPT, [("payload.html", IMG, BREAKOUT)], rep.header, tmp_path)
    assert_inert(index.read_text(), scripts=1)

    got = browser_check(path)
    assert_browser_inert(got)
    if got is not None:
        assert got["plot_links"] == 0 and got["plot_styles"] == []
        for p in (IMG, BREAKOUT, JS_LINK):
            assert p in got["plot_text"], p  # plotly.js shows the text, not markup
        assert SCRIPT in got["body_text"] and IMG in got["body_text"]


def test_an_analysis_report_escapes_contexts_and_symbols(quick_setup, tmp_path):
    """key_geometry's figures name contexts and symbols (legend, hover text, heatmap ticks):
    its real data, each context and symbol prefixed by a payload, through its own builders."""
    from analyses.key_geometry import compute, figures

    data = compute.compute(quick_setup, progress=False)
    ctx = {c: f"{SCRIPT}{c}" for p in data.pca.values() for c in p["context"]}
    sym = {s: f"{IMG}{s}" for p in data.pca.values() for s in p["symbol"]}
    for p in data.pca.values():
        p["context"] = [ctx[c] for c in p["context"]]
        p["symbol"] = [sym[s] for s in p["symbol"]]
    for m in data.cosine.values():
        for axis in ("rows", "cols"):
            m[axis] = [f"{BREAKOUT}{x}" for x in m[axis]]
    panels = tuple(figures.figures(data))
    rep = Report(
        compute.NAME,
        compute.TITLE,
        figures.finding(data),
        panels,
        quick_setup.header(0.0, task=SCRIPT),
        data.to_dict(),
    )
    page = write_report(rep, tmp_path).read_text()
    assert_inert(page, scripts=1 + len(panels))
    first = next(iter(ctx.values()))
    assert_figures_show_text(page, len(panels), (first, next(iter(sym.values())), BREAKOUT))


# --------------------------------------------------------------------------- inspection page


@pytest.fixture(scope="module")
def payload_inspection(quick_setup):
    """An inspection with a payload context, symbol and prompt written into the memory, and
    the page's other user text (tokens, candidates, answers) replaced by payloads."""
    from analyses.inspect.run import inspect_from_setup

    prompt = f"{SCRIPT} {IMG}? Answer:"
    ins = inspect_from_setup(quick_setup, SCRIPT, IMG, "red", prompt=prompt, force=True)
    assert ins.prompt == prompt
    n = len(ins.tokens)
    tokens = tuple(PAYLOADS[i % len(PAYLOADS)] for i in range(n))
    candidates = tuple(
        replace(c, context=SCRIPT, symbol=IMG, label=BREAKOUT) for c in ins.retrieval.candidates
    )
    top = tuple(replace(t, text=BREAKOUT) for t in ins.top_before)
    return replace(
        ins,
        tokens=tokens,
        target_text=SCRIPT,
        retrieval=replace(ins.retrieval, candidates=candidates),
        top_before=top,
        greedy_before=BREAKOUT,
        greedy_after=IMG,
    )


def _props(script: str) -> dict:
    m = re.search(r"CircuitsVis\.\w+,\s*", script)
    assert m is not None, script[:200]
    value, _ = json.JSONDecoder().raw_decode(script, m.end())
    return value


def test_inspection_page_escapes_prompt_tokens_and_bindings(
    quick_setup, payload_inspection, tmp_path
):
    from analyses.inspect.figures import _bundle_script, write_inspection

    ins = payload_inspection
    head = quick_setup.header(0.0, inspect={"context": SCRIPT, "symbol": IMG, "prompt": ins.prompt})
    path = write_inspection(ins, tmp_path / "page.html", head)
    page = path.read_text()
    bundle = scan(_bundle_script()).scripts[0]
    layers = ins.patterns.shape[0]
    found = assert_inert(page, scripts=1 + 1 + layers, trusted=(bundle,))  # bundle, Δ, layers
    views = [s for s in found.scripts if "CircuitsVis.render(" in s]
    assert len(views) == 1 + layers
    shown = [html.escape(t, quote=False) for t in ins.tokens]  # circuitsvis sets innerHTML
    for view in views:  # the tokens arrive in the view as their text, never as markup
        assert _props(view)["tokens"] == shown
    for text in (SCRIPT, IMG, BREAKOUT):
        assert text.replace("<", "&lt;").replace(">", "&gt;") in page
    got = browser_check(path)
    assert_browser_inert(got)
    if got is not None:  # the views show the tokens as text
        assert SCRIPT in got["body_text"] and JS_LINK in got["body_text"].replace("\xa0", " ")


def test_inspection_refuses_a_markup_label(quick_setup):
    """A label must be one token, which markup is not: it is refused before any page exists."""
    from analyses.inspect.run import inspect_from_setup
    from fmi.errors import LabelError

    with pytest.raises(LabelError):
        inspect_from_setup(quick_setup, "game A", "blicket", SCRIPT)
