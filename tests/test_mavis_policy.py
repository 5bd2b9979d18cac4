"""MAVIS value models, policy and recipe on tiny real Llamas: training (exact and Q-head), lazy loading,
per-row preferences in one batch, steering errors, and the recipe's iterations (fresh prompts, resumable)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.generation import STEERING, GenerationConfig, SteerablePolicy
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.methods import get_recipe
from paretoalign.methods.mavis import MAVISPolicy
from paretoalign.methods.mavis.recipe import iteration_prompts
from paretoalign.methods.mavis.trees import tree_info
from paretoalign.methods.mavis.values import Q_HEAD_INIT_SCALE, load_value_model, train_value_model
from paretoalign.models.score_model import sequence_scores, token_values
from paretoalign.objectives import NormStats, get_objective
from paretoalign.training.config import ValueModelConfig

PROMPTS = ["Why is the sky blue?", "Give me three tips for better sleep."]


def _records(tokenizer, target_of_length):
    """Partial responses of several lengths after each prompt, with a target that depends on the length."""
    records = []
    for prompt_ids in prompt_token_ids(tokenizer, PROMPTS):
        for length in range(1, 7):
            records.append({"input_ids": prompt_ids + [40 + i for i in range(length)], "target": target_of_length(length)})
    return records


def _config(model, tmp_path, name, **extra):
    values = dict(model=str(model), output_dir=str(tmp_path / name), max_steps=40, batch_size=6, lr=2e-2,
                  scheduler="constant", progress=False, lora_r=4, dtype="float32")
    values.update(extra)
    return ValueModelConfig(**values)


def _mse(model, records, read):
    with torch.inference_mode():
        return float(torch.tensor([(read(model, r["input_ids"]) - r["target"]) ** 2 for r in records]).mean())


def _scalar(model, ids):
    with torch.no_grad():
        return float(sequence_scores(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0])


def _q(model, ids):
    return float(token_values(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0, -2, ids[-1]])


@pytest.fixture(scope="module")
def exact_value_dir(tiny_model_dir, tiny, tmp_path_factory):
    records = _records(tiny[1], lambda length: 0.3 * length - 1.0)
    return train_value_model(records, _config(tiny_model_dir, tmp_path_factory.mktemp("v"), "exact", lr=5e-3)).model_dir


def test_exact_value_model_learns_the_targets(tiny_model_dir, tiny, exact_value_dir):
    records = _records(tiny[1], lambda length: 0.3 * length - 1.0)
    trained, _ = load_value_model(exact_value_dir, dtype="float32")
    assert trained.config.num_labels == 1
    baseline = sum((r["target"] - sum(x["target"] for x in records) / len(records)) ** 2 for r in records) / len(records)
    assert _mse(trained, records, _scalar) < 0.5 * baseline


def test_q_head_starts_from_the_lm_head_and_learns(tiny_model_dir, tiny, tmp_path):
    records = _records(tiny[1], lambda length: 1.0 if length % 2 else -1.0)
    result = train_value_model(records, _config(tiny_model_dir, tmp_path, "q", max_steps=60), token_head=True)
    trained, _ = load_value_model(result.model_dir, dtype="float32")
    assert trained.config.num_labels == trained.config.vocab_size
    assert _mse(trained, records, _q) < 0.5  # the constant 0 predictor has MSE 1
    started = train_value_model(records, _config(tiny_model_dir, tmp_path, "q0", max_steps=1, lr=1e-12),
                                token_head=True)
    initial, _ = load_value_model(started.model_dir, dtype="float32")
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.testing.assert_close(initial.score.weight, lm.lm_head.weight * Q_HEAD_INIT_SCALE, atol=1e-6, rtol=1e-4)


def test_next_iteration_continues_from_the_previous_value_model(tiny, exact_value_dir, tmp_path):
    records = _records(tiny[1], lambda length: 0.3 * length - 1.0)
    previous, _ = load_value_model(exact_value_dir, dtype="float32")
    untouched = train_value_model(records, _config(exact_value_dir, tmp_path, "next", max_steps=1, lr=1e-12))
    continued, _ = load_value_model(untouched.model_dir, dtype="float32")
    for record in records[:3]:
        assert _scalar(continued, record["input_ids"]) == pytest.approx(_scalar(previous, record["input_ids"]), abs=1e-4)


def test_policy_loads_only_weighted_value_models(tiny, exact_value_dir, tmp_path):
    model, tokenizer = tiny
    policy = MAVISPolicy(model, tokenizer, {"a": exact_value_dir, "b": tmp_path / "never-loaded"}, top_k=5)
    assert isinstance(policy, SteerablePolicy) and policy.objectives == ["a", "b"]
    responses = policy.generate(PROMPTS, Preference.parse("a=1,b=0"), GenerationConfig(max_new_tokens=4))
    assert len(responses) == 2 and all(len(r.token_ids) == 4 or r.finish_reason == "eos" for r in responses)
    assert list(policy.loaded) == ["a"]
    assert responses[0].meta[STEERING] == {"value_weights": {"a": 1.0}, "beta": 1.0, "top_k": 5}
    assert policy.reference() == (model, tokenizer)
    beam = MAVISPolicy(model, tokenizer, {"a": exact_value_dir}, top_k=5, beams=3, candidates=2)
    best = beam.generate(PROMPTS, Preference.parse("a=1"), GenerationConfig(max_new_tokens=4))
    assert all("value" in r.meta and r.logprobs == [0.0] * len(r.token_ids) for r in best)
    with pytest.raises(ConfigError, match="mavis has no policy for objective 'c'; it was trained for a, b"):
        policy.generate(PROMPTS, Preference.parse("a=0.5,c=0.5"), GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="mavis needs a preference"):
        policy.generate(PROMPTS, None, GenerationConfig(max_new_tokens=2))


def test_rows_with_other_preferences_share_one_batch(tiny, exact_value_dir):
    model, tokenizer = tiny
    other, _ = load_value_model(exact_value_dir, dtype="float32")
    with torch.no_grad():
        other.score.weight.neg_()  # a value model that prefers the opposite
    policy = MAVISPolicy(model, tokenizer, {"a": exact_value_dir, "b": other}, beta=50.0, top_k=8)
    preferences = [Preference.parse("a=1,b=0"), Preference.parse("a=0.2,b=0.8")]
    config = GenerationConfig(max_new_tokens=5, seed=1)
    mixed = policy.generate(PROMPTS, preferences, config)
    alone = [policy.generate([prompt], item, config)[0] for prompt, item in zip(PROMPTS, preferences)]
    assert [r.token_ids for r in mixed] == [r.token_ids for r in alone]
    assert [r.meta[STEERING]["value_weights"] for r in mixed] == [{"a": 1.0}, {"a": 0.2, "b": 0.8}]


def test_policy_refuses_bad_settings_and_foreign_tokenizers(tiny, exact_value_dir, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        MAVISPolicy(model, tokenizer, {"a": exact_value_dir}, beta=-0.5)
    with pytest.raises(ConfigError, match="larger than the vocabulary"):
        MAVISPolicy(model, tokenizer, {"a": exact_value_dir}, top_k=10_000)
    with pytest.raises(ConfigError, match="candidates <= beams"):
        MAVISPolicy(model, tokenizer, {"a": exact_value_dir}, beams=2, candidates=3)
    foreign = tmp_path / "foreign"
    trained, value_tokenizer = load_value_model(exact_value_dir, dtype="float32")
    value_tokenizer.add_tokens(["<extra-token>"])
    trained.save_pretrained(foreign)
    value_tokenizer.save_pretrained(foreign)
    policy = MAVISPolicy(model, tokenizer, {"a": foreign})
    with pytest.raises(ConfigError, match="uses another tokenizer than the reference"):
        policy.generate(PROMPTS, Preference.parse("a=1"), GenerationConfig(max_new_tokens=2))


TINY = dict(prompts=2, iterations=2, root_branching=2, branching=2, depth=2, chunk_min=2, chunk_max=3,
            max_new_tokens=8, tree_top_k=7, top_k=5, beta=1.0, value_steps=2, value_batch_size=4, value_lora_r=4,
            value_max_length=160, progress=False)


@pytest.fixture(scope="module")
def objectives():
    concise, informative = get_objective("conciseness"), get_objective("informativeness")
    concise.stats = informative.stats = NormStats(mean=4.0, std=2.0, count=8)
    return [concise, informative]


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, objectives, tmp_path_factory):
    recipe = get_recipe("mavis")
    config = recipe.config("quick", model=str(tiny_model_dir), **TINY)
    return recipe.fit(objectives, tmp_path_factory.mktemp("mavis") / "run", config), config


def _prompts(path) -> set[str]:
    return {prompt for prompt in pq.read_table(path)["prompt"].to_pylist() if prompt is not None}


def test_recipe_iterates_on_fresh_prompts_and_records_relative_folders(fitted):
    run, config = fitted
    assert run.finished and run.compute["generated_tokens"] > 0 and run.compute["trained_tokens"] > 0
    trees = run.manifest["trees"]
    assert sorted(trees) == ["iter0", "iter1-conciseness", "iter1-informativeness"]
    first = _prompts(run.path / trees["iter0"]["path"])
    assert first == set(iteration_prompts(config, 0))
    for shard in ("iter1-conciseness", "iter1-informativeness"):
        later = _prompts(run.path / trees[shard]["path"])
        assert later == set(iteration_prompts(config, 1)) and not later & first  # fresh prompts
        assert tree_info(pq.read_table(run.path / trees[shard]["path"]))["policy"] == "mavis:" + shard[6:]
    info = tree_info(pq.read_table(run.path / trees["iter0"]["path"]))
    assert info["policy"] == "reference" and info["guidance"]["top_k"] == 7 and info["guidance"]["beta"] == 0.0
    assert info["shape"]["max_new_tokens"] == 8
    for name, entry in run.manifest["value_models"].items():
        assert entry["iteration"] == 1 and entry["model"] == f"values/{name}/iter1/model"
        assert (run.path / entry["model"] / "config.json").is_file()
    stages = run.manifest["stages"]
    assert stages["collect"]["generated_tokens"] == trees["iter0"]["generated_tokens"]
    assert stages["train"]["generated_tokens"] == sum(trees[s]["generated_tokens"] for s in trees if s != "iter0")


def test_interrupted_training_resumes_with_the_next_step(fitted, tiny_model_dir, objectives, tmp_path):
    import shutil

    run, config = fitted
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    # as if interrupted after iteration 1's trees of informativeness, before its value model
    manifest["value_models"]["informativeness"] = {**manifest["value_models"]["informativeness"], "iteration": 0,
                                                   "model": "values/informativeness/iter0/model"}
    del manifest["stages"]["train"]
    manifest["status"] = "running"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    kept = [copy / "values/conciseness/iter1/model/model.safetensors", copy / "trees/iter1-informativeness.parquet"]
    kept = {path: path.stat().st_mtime_ns for path in kept}
    messages = []
    resumed = get_recipe("mavis").fit(objectives, copy, config, log=messages.append)
    assert resumed.finished and any("resuming the unfinished mavis run" in m for m in messages)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # finished steps were not redone
    assert resumed.manifest["value_models"]["informativeness"]["iteration"] == 1


def test_loaded_policy_steers_each_row(fitted):
    run, _ = fitted
    policy = get_recipe("mavis").load(run.path, device="cpu", dtype="float32")
    assert isinstance(policy, MAVISPolicy) and policy.objectives == ["conciseness", "informativeness"]
    assert (policy.settings.beta, policy.settings.top_k) == (1.0, 5)
    preferences = [Preference.parse("conciseness=1"), Preference.parse("conciseness=0.3,informativeness=0.7")]
    responses = policy.generate(PROMPTS, preferences, GenerationConfig(max_new_tokens=3))
    assert [r.meta[STEERING]["value_weights"] for r in responses] == [
        {"conciseness": 1.0}, {"conciseness": 0.3, "informativeness": 0.7}]


def test_config_is_checked():
    recipe = get_recipe("mavis")
    with pytest.raises(ConfigError, match="chunk_max"):
        recipe.config(chunk_min=5, chunk_max=2)
    with pytest.raises(ConfigError, match="value_normalization 'softmax' is not one of"):
        recipe.config(value_normalization="softmax")
    with pytest.raises(ConfigError, match="need 400 train prompts, there are"):
        iteration_prompts(recipe.config(prompts=200, iterations=2), 0)
    assert recipe.config("full").iterations == 2 and recipe.config("full").top_k == 40
