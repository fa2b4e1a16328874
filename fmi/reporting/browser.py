"""Open a report in headless Chromium with the network cut off: console errors, failed requests,
and screenshots. Used by the tests (reports must open offline) and to make the README's images.

Needs Debian's ``chromium`` (``make browser`` installs it) and the ``playwright`` Python package
(the ``dev`` extra), which drives that Chromium; Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fmi.errors import FmiError

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: the network is off
)


PLOT_COUNT = "document.querySelectorAll('.js-plotly-plot').length"


class BrowserUnavailableError(FmiError):
    """No Chromium binary or no Playwright package on this machine."""


@dataclass
class PageCheck:
    """What a page did on load: console errors, uncaught exceptions, requests that failed or
    left the local file system (all blocked), and how many Plotly figures rendered."""

    errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    plots: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed_requests


def chromium_path() -> str:
    """The Chromium binary (``$FMI_CHROMIUM`` or ``chromium`` on PATH), or a clear error."""
    found = os.environ.get("FMI_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise BrowserUnavailableError(
            "no chromium binary: install Debian's chromium (`make browser`) or set FMI_CHROMIUM"
        )
    return found


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise BrowserUnavailableError(
            "the playwright package is missing: pip install -e '.[dev]'"
        ) from err
    return sync_playwright


def check_pages(
    paths: list[Path],
    *,
    screenshot_dir: Path | None = None,
    figures: bool = False,
    settle_ms: int = 300,
) -> dict[Path, PageCheck]:
    """Load each page from disk with every non-``file:`` request aborted (and no host name
    resolving); report what happened.

    With ``screenshot_dir``, also save ``<stem>.png`` (the 1280x900 viewport) per page and, with
    ``figures``, ``<stem>-fig<i>.png`` per captioned figure.
    """
    sync_playwright = _playwright()
    binary = chromium_path()
    out: dict[Path, PageCheck] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=list(CHROMIUM_ARGS))
        try:
            for path in paths:
                check = PageCheck()
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on(
                    "console",
                    lambda m, c=check: c.errors.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e, c=check: c.errors.append(f"uncaught: {e}"))
                page.on(
                    "requestfailed",
                    lambda r, c=check: c.failed_requests.append(f"{r.url} ({r.failure})"),
                )
                page.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if route.request.url.startswith("file:")
                        else route.abort()
                    ),
                )
                page.goto(Path(path).resolve().as_uri(), wait_until="load")
                page.wait_for_timeout(settle_ms)
                check.plots = int(page.evaluate(PLOT_COUNT))
                if screenshot_dir is not None:
                    screenshot_dir.mkdir(parents=True, exist_ok=True)
                    stem = Path(path).stem
                    page.screenshot(path=str(screenshot_dir / f"{stem}.png"))
                    if figures:
                        for i, fig in enumerate(page.locator("figure").all()):
                            fig.screenshot(path=str(screenshot_dir / f"{stem}-fig{i}.png"))
                page.close()
                out[path] = check
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m fmi.reporting.browser REPORT_DIR [--png DIR]``: check every page offline,
    optionally
    saving a screenshot of each page and of each of its figures. Exit 1 if any page fails."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m fmi.reporting.browser", description=main.__doc__)
    p.add_argument("reports", help="a directory of HTML reports")
    p.add_argument("--png", help="write screenshots here (page and per-figure PNGs)")
    args = p.parse_args(argv)
    pages = sorted(Path(args.reports).glob("*.html"))
    if not pages:
        print(f"no .html pages in {args.reports}")
        return 1
    png = Path(args.png) if args.png else None
    checks = check_pages(pages, screenshot_dir=png, figures=png is not None)
    for page, check in checks.items():
        state = "ok" if check.ok else f"FAILED {check.errors + check.failed_requests}"
        print(f"{page.name:<28} {check.plots} plots  {state}")
    return 0 if all(c.ok for c in checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
