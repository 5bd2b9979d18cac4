"""scripts/ric_conditioning.py on the tiny Llama: a RiC model trained where the targets decide the answer reads them
(its own targets make a response likelier, the base model's gain is what chance gives), and the samples' spread
by instruction is the objectives' own scores of each group."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from paretoalign.data import ScoredResponse
from paretoalign.methods import get_recipe, load_run
from paretoalign.methods.ric.stages import OFFLINE_DATA
from paretoalign.objectives import load_objectives

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ric_conditioning.py"
SHORT, LONG = "Yes.", "Yes, it is, and here is why it is so."


def load_script():
    spec = importlib.util.spec_from_file_location("ric_conditioning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A RiC run whose data pairs every prompt with a one-word and a ten-word answer: the targets decide which."""
    folder = tmp_path_factory.mktemp("ric-conditioning")
    data = folder / "data.jsonl"
    rows = [{"prompt": f"Question {i}?", "response": text} for i in range(8) for text in (SHORT, LONG)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    objectives = load_objectives("informativeness,conciseness")
    for objective in objectives:
        objective.fit_normalization(["p"] * 2, [SHORT, LONG])
    ric = get_recipe("ric")
    config = ric.config(model=str(tiny_model_dir), dataset=[str(data)], steps=30, batch_size=8, lr=3e-2, lora_r=8,
                        lora_alpha=16, save_every=30, device="cpu", progress=False)
    return ric.fit(objectives, folder / "run", config)


def test_a_model_trained_on_deciding_targets_reads_them(run):
    script = load_script()
    policy = load_run(run.path, device="cpu", dtype="float32")
    records = [ScoredResponse.from_dict(json.loads(line)) for line in (run.path / OFFLINE_DATA).read_text().splitlines()]
    adapted = script.conditioning_gain(policy, records, policy.model)
    base = script.conditioning_gain(policy, records, policy.reference()[0])
    assert adapted.shape == (16,) and adapted.mean() > 1.0 and (adapted > 0).mean() >= 0.75
    assert adapted.mean() > base.mean() + 1.0


def test_spread_by_instruction_is_each_groups_own_scores():
    script = load_script()
    objectives = load_objectives("informativeness")
    samples = [ScoredResponse(prompt="Q", response=text, meta={"steered_by": by})
               for text, by in [("a b", None), ("a b c d", None), ("a", "simplicity"), ("a b c d e f", "informativeness")]]
    spread = script.spread_by_instruction(samples, objectives)
    assert spread == {"plain": {"informativeness": (3.0, 1.0)}, "simplicity": {"informativeness": (1.0, 0.0)},
                      "informativeness": {"informativeness": (6.0, 0.0)}}
