"""The safe_rlhf recipe on the tiny model: one PPO-Lagrangian policy per threshold (separate critics, value clip 5,
token rewards clipped to ±50), resumable per threshold; a request's constraint picks the loosest threshold that
meets it, the tightest by default."""

from __future__ import annotations

import json

import pytest

from paretoalign.core.errors import ConfigError, UnknownObjectiveError
from paretoalign.core.preference import Constraint, Preference
from paretoalign.generation import STEERING, GenerationConfig
from paretoalign.methods import get_recipe

from test_recipes import tiny_config

OBJECTIVES = "conciseness,simplicity"
PROMPTS = ["Explain photosynthesis to a child.", "How do I cook rice?"]
GREEDY = GenerationConfig(max_new_tokens=5, do_sample=False)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return get_recipe("safe_rlhf").fit(OBJECTIVES, tmp_path_factory.mktemp("safe") / "run",
                                       tiny_config("safe_rlhf", tiny_model_dir))


@pytest.fixture(scope="module")
def policy(run):
    return get_recipe("safe_rlhf").load(run.path, device="cpu", dtype="float32")


def trained_manifest(run, entry) -> dict:
    return json.loads((run.path / entry["adapter"]).parent.joinpath("manifest.json").read_text())


def test_one_ppo_lagrangian_policy_per_threshold_with_separate_critics(run):
    entries = run.manifest["policies"]
    assert [entry["threshold"] for entry in entries] == [0.0, 5.0]
    for entry in entries:
        trained = trained_manifest(run, entry)
        assert trained["method"] == "ppo-lag" and trained["threshold"] == entry["threshold"]
        assert trained["cost_objective"] == "length_cost" and trained["normalization"] == run.manifest["normalization"]
        assert (trained["config"]["value_clip_range"], trained["config"]["score_clip"]) == (5.0, 50.0)
        assert entry["critics"] == {"reward": "base model (no score model for conciseness, simplicity)",
                                    "cost": "base model (no score model for length_cost)"}
        assert entry["lambda"] > 0 and entry["generated_tokens"] > 0
        assert (run.path / entry["adapter"] / "critics.safetensors").is_file()
    assert run.compute["trained_tokens"] == sum(entry["trained_tokens"] for entry in entries)


def test_a_constraint_picks_the_loosest_threshold_that_meets_it(policy):
    assert policy.threshold_for(None) == 0.0  # default: the tightest
    assert policy.threshold_for([Constraint.parse("length_cost<=7")]) == 5.0
    assert policy.threshold_for(["length_cost<=5"]) == 5.0
    assert policy.threshold_for(["length_cost<5"]) == 0.0
    assert policy.threshold_for(["length_cost<=7", "length_cost<=2"]) == 0.0
    assert policy.threshold_for(["length_cost<=-1"]) == 0.0  # none is that tight: the tightest there is
    with pytest.raises(UnknownObjectiveError, match="constrained on 'length_cost', not 'toxicity'"):
        policy.threshold_for(["toxicity<=0"])
    with pytest.raises(ConfigError, match="is not an upper bound on the cost"):
        policy.threshold_for(["length_cost>=1"])


def test_generate_answers_with_the_policy_of_the_asked_threshold(policy):
    preference = Preference.parse("conciseness=0.5,simplicity=0.5")
    loose = policy.generate(PROMPTS, preference, GREEDY, constraints=[Constraint.parse("length_cost<=9")])
    assert policy.model.active_adapter == "threshold1"
    assert all(r.meta[STEERING] == {"threshold": 5.0} for r in loose)
    tight = policy.generate(PROMPTS, [preference, None], GREEDY)
    assert policy.model.active_adapter == "threshold0"
    assert all(r.meta[STEERING] == {"threshold": 0.0} for r in tight)


def test_an_interrupted_run_resumes_with_the_next_threshold(tiny_model_dir, tmp_path):
    recipe, config = get_recipe("safe_rlhf"), tiny_config("safe_rlhf", tiny_model_dir)
    run = recipe.fit(OBJECTIVES, tmp_path / "run", config)
    manifest = json.loads((run.path / "manifest.json").read_text())
    manifest["policies"].pop()
    del manifest["stages"]["policies"]
    manifest["status"] = "running"
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    kept = run.path / manifest["policies"][0]["adapter"] / "adapter_model.safetensors"
    stamp = kept.stat().st_mtime_ns
    resumed = recipe.fit(OBJECTIVES, run.path, config)
    assert resumed.finished and kept.stat().st_mtime_ns == stamp
    assert [entry["threshold"] for entry in resumed.manifest["policies"]] == [0.0, 5.0]


def test_presets_and_bad_thresholds():
    recipe = get_recipe("safe_rlhf")
    full = recipe.config("full")
    assert (full.lr, full.critic_lr, full.kl_coef, full.lambda_lr, full.lambda_max, full.cost_window) == (
        1e-5, 5e-6, 0.01, 0.1, 5.0, 128)
    with pytest.raises(ConfigError, match="thresholds must be distinct numbers"):
        recipe.config(thresholds=[1.0, 1.0])
