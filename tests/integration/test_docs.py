"""The documentation site (mkdocs.yml) builds with no warning, loads nothing from the network,
and its API page covers the public API and every module of the library's subpackages. The
README's links into docs/ resolve."""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("core", "memory", "experiments", "models", "reporting")


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs' toc both write it (for the headings used here)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_readme_links_resolve():
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local), local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            assert anchor in _anchors(target), link


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip(
        "mkdocs", reason="mkdocs is not installed (the docs extra: pip install -e '.[docs]')"
    )
    out = tmp_path_factory.mktemp("docs") / "site"
    got = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return got, out


def test_the_site_builds_without_a_warning(site):
    got, out = site
    log = got.stdout + got.stderr
    assert got.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    assert (out / "index.html").is_file() and (out / "api.html").is_file()


def test_no_page_loads_anything_from_the_network(site):
    got, out = site
    assert got.returncode == 0, got.stderr[-2000:]
    for page in out.rglob("*.html"):
        remote = re.findall(
            r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=\"(?:https?:)?//", page.read_text()
        )
        assert not remote, page.name


def test_the_api_page_covers_the_public_api_and_every_module(site):
    got, out = site
    assert got.returncode == 0, got.stderr[-2000:]
    ids = set(re.findall(r'id="([\w.]+)"', (out / "api.html").read_text()))
    import fmi

    assert {f"fmi.{name}" for name in fmi.__all__} <= ids
    modules = {
        f"fmi.{pkg}.{f.stem}"
        for pkg in SUBPACKAGES
        for f in (ROOT / "fmi" / pkg).glob("*.py")
        if not f.name.startswith("_")
    }
    assert modules and modules <= ids, sorted(modules - ids)


def test_the_docstring_extension_examples_run():
    pytest.importorskip("griffe", reason="griffe is not installed (the docs extra)")
    spec = importlib.util.spec_from_file_location("gm", ROOT / "scripts/griffe_markdown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_layout_page_names_every_directory():
    text = (ROOT / "docs" / "layout.md").read_text()
    dirs = [
        str(d.relative_to(ROOT))
        for top in ("fmi", "analyses", "tests")
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and "__pycache__" not in d.parts
    ]
    missing = [d for d in dirs if f"{d}/" not in text]
    assert not missing, missing
