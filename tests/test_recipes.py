"""The method contract on tiny models: every registered recipe fits, loads without training, refuses what it
must, and its policy answers one preference or one per prompt."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.core.rundir import RunDirectory, staging_path
from paretoalign.generation import GenerationConfig
from paretoalign.methods import RECIPES, get_recipe, load_run

OBJECTIVES = "conciseness,simplicity"
PROMPTS = ["Explain photosynthesis to a child.", "How do I cook rice?"]
GREEDY = GenerationConfig(max_new_tokens=6, do_sample=False, seed=0)
SAMPLED = GenerationConfig(max_new_tokens=6, seed=3)

TINY_SETTINGS: dict[str, dict] = {
    "base": {},
    "prompting": {},
    "best_of_n": {"n": 2},
    "soups": dict(prompts=3, samples=2, max_new_tokens=6, epochs=1, batch_size=2, lr=1e-3, max_length=160),
    "psoups": dict(prompts=4, max_new_tokens=8, epochs=1, batch_size=2, lr=1e-3, max_length=160, lora_r=4),
    "mod": dict(prompts=3, samples=2, max_new_tokens=6, epochs=1, batch_size=2, lr=1e-3, max_length=160),
    "mavis": dict(prompts=2, root_branching=2, branching=2, depth=2, chunk_min=2, chunk_max=3, max_new_tokens=8,
                  tree_top_k=5, top_k=5, value_steps=2, value_batch_size=4, value_lora_r=4, value_max_length=160),
    "ric": dict(max_prompts=3, samples_per_prompt=2, max_new_tokens=6, steps=2, batch_size=2, lora_r=4, max_length=256),
    "morlhf": dict(points_per_axis=2, prompts=2, steps=1, batch_size=2, minibatch_size=2, max_new_tokens=6, lora_r=4),
    "safe_rlhf": dict(thresholds=[0.0, 5.0], prompts=2, steps=1, batch_size=2, minibatch_size=2, max_new_tokens=6,
                      lora_r=4),
    "hc_rlhf": dict(threshold=1000.0, prompts=2, steps=1, prompts_per_step=2, samples=2, max_new_tokens=6,
                    safety_prompts=3, lora_r=4),
    "sipo": dict(prompts=8, samples=4, max_new_tokens=8, epochs=1, batch_size=2, lr=1e-3, max_length=160,
                 review_tokens=6, conflict_prompts=0, realign_epochs=1, realign_lr=1e-3, steered=True),
}
"""Settings that make each recipe's quick preset run in seconds on the tiny model (``model`` is added)."""


def tiny_config(name: str, model_dir, **overrides):
    recipe = get_recipe(name)
    quiet = {"progress": False} if "progress" in recipe.Config.__dataclass_fields__ else {}
    return recipe.config("quick", model=str(model_dir), **{**quiet, **TINY_SETTINGS[name], **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tmp_path_factory):
    """Every registered recipe fitted once into its own run directory."""
    root = tmp_path_factory.mktemp("recipes")
    return {name: get_recipe(name).fit(OBJECTIVES, root / name, tiny_config(name, tiny_model_dir)) for name in RECIPES}


def _files(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_registered_recipe_has_tiny_settings():
    assert sorted(TINY_SETTINGS) == sorted(RECIPES)


@pytest.mark.parametrize("name", list(RECIPES))
def test_fit_then_load_round_trips_and_load_never_writes(fitted, name):
    run = fitted[name]
    assert run.finished and run.method == name
    assert run.fingerprint["objectives"] == OBJECTIVES.split(",")
    before = _files(run.path)
    policy = get_recipe(name).load(run.path, device="cpu", dtype="float32")
    assert policy.training_cost == run.compute
    preference = Preference.parse("conciseness=0.7,simplicity=0.3")
    responses = policy.generate(PROMPTS, preference, GREEDY)
    assert [r.prompt for r in responses] == PROMPTS and all(r.token_ids for r in responses)
    assert _files(run.path) == before  # loading and generating wrote nothing into the run


@pytest.mark.parametrize("name", list(RECIPES))
def test_one_preference_per_prompt_equals_each_preference_alone(fitted, name):
    policy = load_run(fitted[name].path, device="cpu", dtype="float32")
    first, second = Preference.parse("conciseness=1,simplicity=0"), Preference.parse("conciseness=0,simplicity=1")
    mixed = policy.generate(PROMPTS, [first, second], SAMPLED)
    alone = [policy.generate([PROMPTS[0]], first, SAMPLED)[0], policy.generate([PROMPTS[1]], second, SAMPLED)[0]]
    assert [r.token_ids for r in mixed] == [r.token_ids for r in alone]


@pytest.mark.parametrize("name", [name for name, recipe in RECIPES.items() if not recipe.instant])
def test_a_second_fit_with_the_same_settings_reloads_without_training(fitted, tiny_model_dir, name):
    run = fitted[name]
    before = _files(run.path)
    again = get_recipe(name).fit(OBJECTIVES, run.path, tiny_config(name, tiny_model_dir))
    assert again.finished and _files(run.path) == before


def test_fit_with_other_settings_names_the_field_and_keeps_the_run(fitted, tiny_model_dir):
    run = fitted["soups"]
    before = _files(run.path)
    with pytest.raises(ConfigError, match=r"was fitted with another config\.lr \(0\.001, not 0\.002\); pass "
                                          "--overwrite"):
        get_recipe("soups").fit(OBJECTIVES, run.path, tiny_config("soups", tiny_model_dir, lr=2e-3))
    with pytest.raises(ConfigError, match="was fitted with another objectives"):
        get_recipe("soups").fit("conciseness,friendliness", run.path, tiny_config("soups", tiny_model_dir))
    assert _files(run.path) == before


def test_load_refuses_other_methods_unfinished_runs_and_non_runs(fitted, tmp_path):
    with pytest.raises(ConfigError, match="is a 'soups' run, not a 'mod' one"):
        get_recipe("mod").load(fitted["soups"].path)
    unfinished = RunDirectory.for_fit(tmp_path / "half", "soups", {"method": "soups"})
    unfinished.record_stage("samples", {"generated_tokens": 5})
    with pytest.raises(ConfigError, match=r"is an unfinished soups run \(stages done: samples\); finish it with "
                                          "`paretoalign fit soups"):
        get_recipe("soups").load(unfinished.path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="is not a paretoalign run"):
        load_run(tmp_path / "plain")
    with pytest.raises(ConfigError, match="does not exist"):
        get_recipe("soups").load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="holds a 'soups' run, not a 'mod' one"):
        get_recipe("mod").fit(OBJECTIVES, fitted["soups"].path, get_recipe("mod").config())


def test_an_interrupted_fit_resumes_with_its_finished_stages(tiny_model_dir, tmp_path):
    recipe = get_recipe("soups")
    config = tiny_config("soups", tiny_model_dir)
    run = recipe.fit(OBJECTIVES, tmp_path / "run", config)
    manifest = json.loads((run.path / "manifest.json").read_text())
    first = manifest["policies"].pop("simplicity")  # as if interrupted after the first objective's adapter
    del manifest["stages"]["policies"]
    manifest["status"] = "running"
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    adapter = run.path / manifest["policies"]["conciseness"]["adapter"] / "adapter_model.safetensors"
    kept = adapter.stat().st_mtime_ns
    messages = []
    resumed = recipe.fit(OBJECTIVES, run.path, config, log=messages.append)
    assert resumed.finished and adapter.stat().st_mtime_ns == kept
    assert resumed.manifest["policies"]["simplicity"]["steps"] == first["steps"]
    assert any("resuming the unfinished soups run" in m and "stages done: samples" in m for m in messages)


def test_overwrite_builds_beside_the_old_run_and_swaps_when_finished(tiny_model_dir, tmp_path):
    recipe = get_recipe("prompting")
    old = recipe.fit(OBJECTIVES, tmp_path / "run", recipe.config(model=str(tiny_model_dir)))
    staged = RunDirectory.for_fit(tmp_path / "run", "prompting", recipe.fingerprint(
        recipe.config(model=str(tiny_model_dir), seed=5), []), overwrite=True)
    assert staged.path == staging_path(old.path) and RunDirectory.open(old.path).finished  # old one untouched
    staged.mark_finished()
    assert staged.path == old.path and RunDirectory.open(old.path).fingerprint["seed"] == 5
    assert not staging_path(old.path).exists()


def test_yaml_keys_and_flag_values_are_checked(tmp_path):
    recipe = get_recipe("soups")
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.01\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate' for SoupsConfig; its settings are: model"):
        recipe.config(path=path)
    path.write_text("lr: 0.01\nepochs: 3\n")
    config = recipe.config("quick", path=path, epochs=1)
    assert (config.lr, config.epochs, config.trainer) == (0.01, 1, "dpo")  # preset < YAML < flags
    with pytest.raises(ConfigError, match="batch_size must be an integer, got 'many'"):
        recipe.config(batch_size="many")


def test_reading_the_registry_imports_no_model_library():
    code = "import sys, paretoalign.methods; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_missing_an_adapter_is_named_before_any_model_loads(fitted, tmp_path):
    import shutil

    copy = shutil.copytree(fitted["soups"].path, tmp_path / "soups")
    shutil.rmtree(copy / "policies" / "simplicity")
    with pytest.raises(ConfigError, match=r"has lost its policy for 'simplicity' .* refit it with `paretoalign fit "
                                          "soups --overwrite`"):
        get_recipe("soups").load(copy)
