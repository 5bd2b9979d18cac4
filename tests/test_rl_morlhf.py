"""MORLHF recipe: the preference grid, one adapter per grid point, the nearest adapter answers, reload of a
finished grid with its training cost, π_ref = the base with adapters off."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig
from paretoalign.methods.morlhf import (
    COMPUTE_FILE,
    MORLHFBudget,
    MORLHFPolicy,
    preference_grid,
    train_for_demo,
    train_morlhf_grid,
)
from paretoalign.models import load_model
from paretoalign.objectives import Conciseness, Informativeness



TINY_BUDGET = MORLHFBudget(points_per_axis=2, prompts=4, steps=1, batch_size=4, minibatch_size=4, max_new_tokens=4,
                           lr=1e-2, lora_r=4, lora_alpha=8)


def fitted_objectives():
    objectives = [Conciseness(), Informativeness()]
    for objective in objectives:
        objective.fit_normalization(["q"] * 3, ["a", "a b", "a b c d"])
    return objectives


def test_preference_grid_is_a_simplex_lattice():
    grid = preference_grid(["a", "b"], 3)
    assert [p.as_dict() for p in grid] == [{"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 0.5}, {"a": 0.0, "b": 1.0}]
    three = preference_grid(["a", "b", "c"], 3)
    assert len(three) == 6 and all(sum(p.as_dict().values()) == pytest.approx(1) for p in three)


def test_grid_training_reload_and_nearest_adapter(tiny_model_dir, tmp_path):
    objectives = fitted_objectives()
    prompts = [f"Tell me about the sea, part {i}." for i in range(4)]
    adapters = train_morlhf_grid(objectives, tmp_path, budget=TINY_BUDGET, model=str(tiny_model_dir), prompts=prompts,
                                 progress=False)
    assert list(adapters) == ["conciseness=1,informativeness=0", "conciseness=0,informativeness=1"]
    assert all((folder / "adapter_config.json").is_file() for folder in adapters.values())
    compute = json.loads((tmp_path / COMPUTE_FILE).read_text())
    assert compute["generated_tokens"] > 0 and compute["trained_tokens"] > 0

    policy = train_for_demo(objectives, tmp_path, progress=False)
    assert policy.name == "morlhf" and policy.objectives == ["conciseness", "informativeness"]
    assert policy.training_cost == {k: compute[k] for k in ("generated_tokens", "trained_tokens", "wall_time_s")}
    assert policy.nearest(Preference.parse("conciseness=0.8,informativeness=0.2")) == 0
    assert policy.nearest(Preference.parse("conciseness=0.3,informativeness=0.7")) == 1
    config = GenerationConfig(max_new_tokens=4, seed=0)
    answers = [policy.generate(prompts, Preference.parse(p), config) for p in ("conciseness=1", "informativeness=1")]
    assert policy.model.active_adapter == "point1"
    assert all(len(batch) == 4 for batch in answers)

    reference, _ = policy.reference()
    base, _ = load_model(str(tiny_model_dir))
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(prompts[:1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, base(input_ids=ids).logits)

    with pytest.raises(ConfigError, match="holds MORLHF policies for conciseness, informativeness"):
        train_for_demo([Conciseness()], tmp_path, progress=False)


def test_policy_needs_a_preference_over_its_objectives(tiny_model_dir, tmp_path):
    objectives = fitted_objectives()
    adapters = train_morlhf_grid(objectives, tmp_path, budget=TINY_BUDGET, model=str(tiny_model_dir),
                                 prompts=["Hi there."], progress=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = MORLHFPolicy(base, AutoTokenizer.from_pretrained(tiny_model_dir), adapters)
    with pytest.raises(ConfigError, match="needs a preference"):
        policy.generate(["Hi"], None, GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="unknown objective 'simplicity'"):
        policy.nearest(Preference.parse("simplicity=1"))
