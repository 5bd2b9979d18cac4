"""The MORLHF recipe on the tiny model: one PPO adapter per point of core.weight_grid, resumable per point, the
full preset runs the original's PPO schedule, and the policy answers each prompt from its nearest point (rows
grouped by point) with π_ref = the base."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError, UnknownObjectiveError
from paretoalign.core.preference import Preference, weight_grid
from paretoalign.generation import STEERING, GenerationConfig
from paretoalign.methods import get_recipe

from test_recipes import tiny_config

OBJECTIVES = "conciseness,simplicity"
PROMPTS = ["Explain photosynthesis to a child.", "How do I cook rice?", "Name a planet."]
SAMPLED = GenerationConfig(max_new_tokens=5, seed=1)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return get_recipe("morlhf").fit(OBJECTIVES, tmp_path_factory.mktemp("morlhf") / "run",
                                    tiny_config("morlhf", tiny_model_dir))


@pytest.fixture(scope="module")
def policy(run):
    return get_recipe("morlhf").load(run.path, device="cpu", dtype="float32")


def test_one_adapter_per_point_of_the_weight_grid_on_normalized_rewards(run):
    points = run.manifest["points"]
    assert [p["preference"] for p in points] == [p.as_dict() for p in weight_grid(OBJECTIVES.split(","), 2)]
    for point in points:
        assert (run.path / point["adapter"] / "adapter_model.safetensors").is_file()
        assert point["generated_tokens"] > 0 and point["trained_tokens"] > 0
        trained = json.loads((run.path / point["adapter"]).parent.joinpath("manifest.json").read_text())
        assert trained["method"] == "morlhf" and trained["preference"] == point["preference"]
        assert trained["normalization"] == run.manifest["normalization"]  # the run's statistics, not refitted
    assert run.compute["generated_tokens"] == sum(p["generated_tokens"] for p in points)


def test_an_interrupted_grid_resumes_with_the_next_point(tiny_model_dir, tmp_path):
    recipe, config = get_recipe("morlhf"), tiny_config("morlhf", tiny_model_dir)
    run = recipe.fit(OBJECTIVES, tmp_path / "run", config)
    manifest = json.loads((run.path / "manifest.json").read_text())
    lost = manifest["points"].pop()  # as if interrupted after the first point
    del manifest["stages"]["grid"]
    manifest["status"] = "running"
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    kept = run.path / manifest["points"][0]["adapter"] / "adapter_model.safetensors"
    stamp = kept.stat().st_mtime_ns
    resumed = recipe.fit(OBJECTIVES, run.path, config)
    assert resumed.finished and kept.stat().st_mtime_ns == stamp  # the finished point is kept, not retrained
    assert resumed.manifest["points"][1]["preference"] == lost["preference"]
    assert resumed.manifest["points"][0] == manifest["points"][0]


def test_the_full_preset_runs_the_originals_ppo_schedule(tiny_model_dir, tmp_path):
    recipe = get_recipe("morlhf")
    full = recipe.config("full")
    assert (full.kl_coef, full.kl_target, full.ppo_epochs, full.early_stopping, full.lr, full.temperature) == (
        0.2, 3.0, 4, True, 1e-5, 0.7)
    tiny = dict(points_per_axis=2, prompts=2, steps=1, batch_size=2, max_new_tokens=4, lora_r=4, lora_alpha=8,
                progress=False)
    run = recipe.fit("conciseness", tmp_path / "full", recipe.config("full", model=str(tiny_model_dir), **tiny))
    trained = json.loads((run.path / run.manifest["points"][0]["adapter"]).parent.joinpath("manifest.json").read_text())
    used = trained["config"]
    assert (used["kl_coef"], used["kl_target"], used["ppo_epochs"], used["early_stopping"], used["lr"],
            used["temperature"], used["minibatch_size"]) == (0.2, 3.0, 4, True, 1e-5, 0.7, 1)
    assert len(run.manifest["points"]) == 1  # one objective: a single point, all weight on it


def test_each_prompt_is_answered_by_its_nearest_point(policy):
    near_first, near_second = "conciseness=0.8,simplicity=0.2", "conciseness=0.3,simplicity=0.7"
    concise, simple = {"conciseness": 1.0, "simplicity": 0.0}, {"conciseness": 0.0, "simplicity": 1.0}
    assert policy.points[policy.nearest(Preference.parse(near_first))].as_dict() == concise
    assert policy.points[policy.nearest(Preference.parse(near_second))].as_dict() == simple
    preferences = [Preference.parse(p) for p in (near_first, near_second, "conciseness=0.9,simplicity=0.1")]
    mixed = policy.generate(PROMPTS, preferences, SAMPLED)
    assert [r.meta[STEERING]["nearest_point"] for r in mixed] == [concise, simple, concise]
    grouped = policy.generate([PROMPTS[0], PROMPTS[2]], Preference.parse("conciseness=1"), SAMPLED)
    assert [r.token_ids for r in grouped] == [mixed[0].token_ids, mixed[2].token_ids]


def test_the_reference_is_the_base_and_a_preference_must_name_the_grids_objectives(policy, tiny_model_dir):
    ids = torch.tensor([[1, 5, 9, 12, 30]])
    reference, _ = policy.reference()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, base(input_ids=ids).logits)
    with pytest.raises(UnknownObjectiveError, match="MORLHF has no policy for objective 'friendliness'"):
        policy.generate(PROMPTS[:1], Preference.parse("friendliness=1"), SAMPLED)
    with pytest.raises(ConfigError, match="MORLHF needs a preference"):
        policy.generate(PROMPTS[:1], None, SAMPLED)
