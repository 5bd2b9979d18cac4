"""scripts/readme_results.py: the README's marked table is replaced by the sweep's own summary, nothing else."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "readme_results.py"


def load_script():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULTS = {
    "objectives": ["simplicity", "informativeness"],
    "preset": {"eval_prompts": 10, "samples_per_prompt": 1, "max_new_tokens": 40, "points_per_axis": 11},
    "methods": {"soups": {"hypervolume": 2.5, "mip": 0.3, "mean_kl": 4.0, "min_steerability": 0.9, "cut_off": 0.5,
                          "front": [1, 2], "cost": {"generated_tokens": 400, "trained_tokens": 100, "seconds": 9.0},
                          "steerability": {"simplicity": {"spearman": 0.9, "wrong_steps": 1, "steps": 10},
                                           "informativeness": {"spearman": 0.95, "wrong_steps": 0, "steps": 10}}}},
}


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def test_the_marked_block_is_replaced_and_the_rest_kept(tmp_path, results):
    script = load_script()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:demo -->\nold table\n<!-- /results:demo -->\noutro\n")
    script.main([str(results), "--name", "demo", "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:demo -->\n```\nmethod")
    assert text.endswith("<!-- /results:demo -->\noutro\n")
    assert "old table" not in text
    assert "soups          2.500" in text and "simplicity +0.90 (1 wrong steps)" in text


def test_missing_markers_or_results_stop_with_one_line(tmp_path, results):
    script = load_script()
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no '<!-- results:demo -->'"):
        script.main([str(results), "--readme", str(readme)])
    with pytest.raises(SystemExit, match="does not exist; run the sweep first"):
        script.main([str(tmp_path / "absent.json"), "--readme", str(readme)])
    assert readme.read_text() == "no markers here\n"


def test_long_method_names_keep_the_columns_aligned():
    from paretoalign.evaluation.campaign import summary_table

    results = {**RESULTS, "methods": {"ric@runs/ric128": RESULTS["methods"]["soups"], **RESULTS["methods"]}}
    header, _, long_row, short_row = summary_table(results).splitlines()[:4]
    hv_end = header.index("HV") + len("HV")
    assert long_row[:hv_end].endswith("2.500") and short_row[:hv_end].endswith("2.500")
