"""scripts/seed_spread.py: a sweep rescored on its own normalization gives the HV, MIP and steerability it reported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from paretoalign.evaluation import build_results, weight_grid
from paretoalign.evaluation.sweep import evaluate
from paretoalign.generation import BasePolicy, GenerationConfig
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.objectives import load_objectives
from paretoalign.objectives.normalization import fit_reference_normalization

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "seed_spread.py"
PROMPTS = ["Explain the sky.", "How do I cook rice?", "Write a poem about the sea."]
CONFIG = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=3)


def load_script():
    spec = importlib.util.spec_from_file_location("seed_spread", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rescoring_a_sweep_on_its_own_scale_reproduces_its_figures(tiny, tmp_path, capsys):
    objectives = load_objectives("conciseness,informativeness")  # conciseness: lower raw is better
    fit_reference_normalization(objectives, BasePolicy(*tiny), PROMPTS, CONFIG)
    grid = weight_grid([o.name for o in objectives], 3)
    sweep = evaluate(PromptingPolicy(*tiny), objectives, PROMPTS, grid, config=CONFIG, progress=False)
    results = build_results([sweep], prompts=len(PROMPTS), preset={}, base_model="tiny")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    method, names, script = results["methods"]["prompting"], results["objectives"], load_script()
    row = script.rescored(method, results["normalization"], names)
    assert row["hv"] == pytest.approx(method["hypervolume"]) and row["mip"] == pytest.approx(method["mip"])
    assert [row[n] for n in names] == [method["steerability"][n]["spearman"] for n in names]
    script.main([str(path), str(path)])
    assert f"SPREAD prompting: HV {method['hypervolume']:.2f} ± 0.00 over 2 sweeps" in capsys.readouterr().out


def test_a_missing_results_file_stops_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="does not exist; run the sweep first"):
        load_script().main([str(tmp_path / "absent.json")])
