"""``fmi analyses``: every report, the index, the header, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from analyses.cli.main import main
from analyses.prepare import AnalysisConfig
from analyses.run import ANALYSES, check_names
from fmi.errors import ConfigError

HEADER_KEYS = ("model", "config", "versions", "git", "sites", "alpha", "seeds", "task_sizes")


def test_index_links_every_report_with_its_finding(quick_reports):
    out, index = quick_reports
    html = index.read_text()
    for name in ANALYSES:
        doc = json.loads((out / f"{name}.json").read_text())
        assert f"href='{name}.html'" in html
        assert doc["finding"] in html.replace("&#x27;", "'")
        for key in HEADER_KEYS:
            assert key in doc["header"], f"{name} header lacks {key}"
        assert doc["header"]["wall_seconds"] >= 0
        assert doc["header"]["model"]["processing"] is not None
    assert "inspect-same.html" in html and (out / "inspect-same.html").exists()


def test_reports_reference_no_network_resource(quick_reports):
    out, _ = quick_reports
    for page in out.glob("*.html"):
        text = page.read_text()
        for marker in ("src='http", 'src="http', "href='http", 'href="http', "cdn."):
            assert marker not in text, f"{page.name} references the network ({marker})"


def test_unknown_analysis_is_named():
    with pytest.raises(ConfigError, match="unknown analysis nope; analyses are key_geometry"):
        check_names(["nope"])


def test_cli_rejects_unknown_analysis(capsys):
    assert main(["analyses", "--quick", "--only", "nope"]) == 2
    assert "unknown analysis nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("alphas", (), "alphas must be positive"),
        ("probe_folds", 1, "probe_folds must be >= 2"),
        ("sweep_prompts", 0, "sweep_prompts must be >= 1"),
        ("key_layers", (-1,), "key_layers must be non-negative"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        AnalysisConfig(**{field: value})


def test_key_layers_beyond_the_model_are_named(quick_setup):
    from dataclasses import replace

    setup = replace(quick_setup, cfg=replace(quick_setup.cfg, key_layers=(0, 7)))
    with pytest.raises(ConfigError, match=r"key_layers \[7\] do not exist: tiny-gemma has layers"):
        setup.key_layers()


def test_cli_quick_run_writes_one_report(tmp_path, capsys):
    code = main(
        ["analyses", "--quick", "--only", "key_geometry", "--out", str(tmp_path), "--quiet"]
    )
    assert code == 0
    assert (tmp_path / "key_geometry.html").exists() and (tmp_path / "index.html").exists()
    assert "fmi: wrote" in capsys.readouterr().out


def test_no_hook_left_after_every_analysis(quick_setup, quick_reports):
    """Every injection in the sweeps, the steering comparison and the inspections went through
    ``bridge.hooks(...)``: nothing stays attached to the shared model afterwards."""
    bridge = quick_setup.model.bridge
    assert sum(len(hp._forward_hooks) for hp in bridge.hook_dict.values()) == 0
