"""The layout's rules: the library (``fmi``) never imports the analysis layer (``analyses``), no
module-level import cycle exists, every analysis splits into compute and figures, and no module
grows past the size the design card allows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 420  # "no module over about 400 lines"
ANALYSES = (
    "key_geometry",
    "layer_sweep",
    "probes",
    "correction_vs_steering",
    "relation_geometry",
)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (absolute names); only those run at import time if asked
    (skipping function bodies and ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = []
    if top_level_only:
        stack = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                stack += [*node.body, *getattr(node, "orelse", []), *getattr(node, "handlers", [])]
            elif isinstance(node, ast.ExceptHandler):
                stack += node.body
            else:
                nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def test_the_library_never_imports_the_analysis_layer():
    bad = {
        f"{p.relative_to(ROOT)}: {name}"
        for p in _sources("fmi")
        for name in _imports(p, top_level_only=False)
        if name == "analyses" or name.startswith("analyses.")
    }
    assert not bad, sorted(bad)


def test_the_public_api_loads_no_analysis_module(tmp_path):
    code = """
import sys
import fmi
model = fmi.load_model("tiny-gemma", announce=lambda _: None)
memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
memory.generate(model, ["Alice's favourite drink is"], max_new_tokens=2)
memory.save(sys.argv[1])
fmi.FastMemory.load(sys.argv[1], model)
fmi.list_models(), fmi.builtin_task("seed")
loaded = sorted(m for m in sys.modules if m == "analyses" or m.startswith("analyses."))
print("ANALYSES:", loaded)
"""
    got = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.fmi.safetensors")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert "ANALYSES: []" in got.stdout, got.stdout


def _graph() -> dict[str, set[str]]:
    paths = _sources("fmi", "analyses")
    modules = {_module(p) for p in paths}
    return {
        _module(p): {m for m in _imports(p, top_level_only=True) if m in modules} - {_module(p)}
        for p in paths
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in graph:
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path, state[start] = [start], 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_the_cycle_finder_finds_a_known_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_level_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("name", ANALYSES)
def test_every_analysis_splits_into_compute_and_figures(name):
    folder = ROOT / "analyses" / name
    assert (folder / "compute.py").exists() and (folder / "figures.py").exists()
    figures = _imports(folder / "figures.py", top_level_only=False)
    assert "plotly.graph_objects" in figures
    compute = _imports(folder / "compute.py", top_level_only=False)
    assert not any(m.startswith("plotly") for m in compute), "compute builds no figure"


def test_no_module_is_over_the_size_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources("fmi", "analyses")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_library_module_shadows_the_standard_library():
    stdlib = set(sys.stdlib_module_names)
    shadow = [str(p.relative_to(ROOT)) for p in _sources("fmi", "analyses") if p.stem in stdlib]
    assert not shadow, shadow


def test_no_unit_test_imports_the_analysis_layer():
    bad = {
        f"{p.relative_to(ROOT)}: {name}"
        for p in sorted((ROOT / "tests" / "unit").glob("*.py"))
        for name in _imports(p, top_level_only=False)
        if name == "analyses" or name.startswith("analyses.")
    }
    assert not bad, sorted(bad)


def test_the_public_api_is_short_and_every_name_has_an_example():
    import inspect

    import fmi

    assert 5 <= len(fmi.__all__) <= 12, fmi.__all__
    for name in fmi.__all__:
        doc = inspect.getdoc(getattr(fmi, name)) or ""
        assert ">>>" in doc, f"fmi.{name} has no example"
