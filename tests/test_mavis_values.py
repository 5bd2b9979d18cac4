"""scripts/mavis_values.py on a tiny MAVIS run: the batched predictions are each node's own score, and every value
model gets an in-sample and a held-out correlation computed on the trees' Monte-Carlo values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from paretoalign.methods import get_recipe
from paretoalign.methods.mavis.recipe import value_model_folders
from paretoalign.methods.mavis.trees import read_shards, value_records
from paretoalign.methods.mavis.values import load_value_model
from paretoalign.models.score_model import sequence_scores
from paretoalign.objectives import NormStats, get_objective

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mavis_values.py"
TINY = dict(prompts=2, iterations=1, root_branching=2, branching=2, depth=2, chunk_min=2, chunk_max=3,
            max_new_tokens=8, tree_top_k=7, top_k=5, beta=1.0, value_steps=2, value_batch_size=4, value_lora_r=4,
            value_max_length=160, progress=False)


def load_script():
    spec = importlib.util.spec_from_file_location("mavis_values", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    concise, informative = get_objective("conciseness"), get_objective("informativeness")
    concise.stats = informative.stats = NormStats(mean=4.0, std=2.0, count=8)
    recipe = get_recipe("mavis")
    config = recipe.config("quick", model=str(tiny_model_dir), **TINY)
    return recipe.fit([concise, informative], tmp_path_factory.mktemp("mavis") / "run", config)


def test_correlations_are_those_of_each_nodes_own_score(run):
    script = load_script()
    table = read_shards([run.path / run.manifest["trees"]["iter0"]["path"]])
    model, tokenizer = load_value_model(value_model_folders(run)["informativeness"], device="cpu", dtype="float32")
    records = value_records(table, "informativeness")
    batched = script.predictions(model, tokenizer, records)
    with torch.inference_mode():
        alone = [float(sequence_scores(model, torch.tensor([r["input_ids"]]), torch.ones(1, len(r["input_ids"]),
                                                                                           dtype=torch.long))[0])
                 for r in records]
    assert batched == pytest.approx(alone, abs=1e-4)
    correlations = script.value_correlations(run.path, 2)
    assert set(correlations) == {"conciseness", "informativeness"}
    expected = spearmanr(batched, [r["target"] for r in records]).statistic
    assert correlations["informativeness"]["in_sample"] == pytest.approx(expected, abs=1e-6)
    assert all(set(c) == {"in_sample", "held_out"} for c in correlations.values())
