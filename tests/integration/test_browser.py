"""Reports open offline: headless Chromium, network cut off, no console error, no failed request."""

from __future__ import annotations

import pytest

from fmi.reporting.browser import BrowserUnavailableError, check_pages, chromium_path

try:
    chromium_path()
    import playwright  # noqa: F401
except (BrowserUnavailableError, ImportError) as err:  # pragma: no cover - environment
    pytest.skip(f"headless browser unavailable: {err}", allow_module_level=True)


def test_checker_catches_errors_and_network_requests(tmp_path):
    """The checker must fail a bad page, or passing reports would prove nothing."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<html><head><script src='missing.js'></script>"
        "<script src='https://cdn.example.com/x.js'></script></head>"
        "<body><script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    good = tmp_path / "good.html"
    good.write_text("<html><body><p>fine</p><script>console.log('hello')</script></body></html>")
    checks = check_pages([bad, good])
    assert not checks[bad].ok
    assert any("boom" in e for e in checks[bad].errors)
    assert any("undefinedFunction" in e for e in checks[bad].errors)
    assert any("cdn.example.com" in r for r in checks[bad].failed_requests)
    assert "missing.js" in " ".join(checks[bad].errors + checks[bad].failed_requests)
    assert checks[good].ok


def test_every_report_opens_offline(quick_reports):
    out, index = quick_reports
    pages = sorted(out.glob("*.html"))
    names = {p.name for p in pages}
    assert {"index.html", "key_geometry.html", "layer_sweep.html"} <= names
    checks = check_pages(pages, screenshot_dir=out / "png")
    for page, check in checks.items():
        assert check.ok, f"{page.name}: errors {check.errors}, failed {check.failed_requests}"
    for name in ("key_geometry", "layer_sweep", "steering", "probes"):
        page = out / f"{name}.html"
        if page.exists():
            assert checks[page].plots >= 2, f"{name}: only {checks[page].plots} plots rendered"
    assert all((out / "png" / f"{p.stem}.png").stat().st_size > 5_000 for p in pages)


def test_browser_cli_exit_status(tmp_path, capsys):
    from fmi.reporting.browser import main

    (tmp_path / "good.html").write_text("<html><body><p>fine</p></body></html>")
    assert main([str(tmp_path), "--png", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / "good.png").exists()
    (tmp_path / "bad.html").write_text("<html><body><script>nope()</script></body></html>")
    assert main([str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main([str(tmp_path / "empty")]) == 1
