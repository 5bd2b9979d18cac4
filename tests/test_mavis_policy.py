"""MAVIS value models and policy on tiny real Llamas: training (exact and Q-head), lazy loading,
steering errors, and train_for_demo end to end."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig, SteerablePolicy
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.methods.mavis import MAVISPolicy, load_value_model, recipe, train_for_demo, train_value_model
from paretoalign.methods.mavis.values import Q_HEAD_INIT_SCALE
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
    return train_value_model(records, _config(tiny_model_dir, tmp_path_factory.mktemp("v"), "exact")).model_dir


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
    assert policy.reference() == (model, tokenizer)
    beam = MAVISPolicy(model, tokenizer, {"a": exact_value_dir}, top_k=5, beams=3, candidates=2)
    best = beam.generate(PROMPTS, Preference.parse("a=1"), GenerationConfig(max_new_tokens=4))
    assert all("value" in r.meta and r.logprobs == [0.0] * len(r.token_ids) for r in best)
    with pytest.raises(ConfigError, match="no value model for objective 'c'"):
        policy.generate(PROMPTS, Preference.parse("a=0.5,c=0.5"), GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="needs a preference"):
        policy.generate(PROMPTS, None, GenerationConfig(max_new_tokens=2))


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


def test_train_for_demo_builds_and_reloads(tiny_model_dir, tmp_path, monkeypatch):
    quick = recipe.BUDGETS["quick"]
    small = recipe.MAVISRecipe(shape=recipe.TreeShape(root_branching=2, branching=2, depth=2, chunk_min=2, chunk_max=3),
                               prompts=2, iterations=2, guidance=recipe.GuidanceSettings(beta=1.0, top_k=5),
                               value={**quick.value, "max_steps": 2, "batch_size": 4})
    monkeypatch.setitem(recipe.BUDGETS, "quick", small)
    concise, informative = get_objective("conciseness"), get_objective("informativeness")
    concise.stats = informative.stats = NormStats(mean=4.0, std=2.0, count=8)
    workdir = tmp_path / "mavis"
    policy = train_for_demo([concise, informative], workdir, model=str(tiny_model_dir), progress=False)
    assert policy.name == "mavis" and set(policy.training_cost) == {"generated_tokens", "trained_tokens", "wall_time_s"}
    assert policy.training_cost["generated_tokens"] > 0 and policy.training_cost["trained_tokens"] > 0
    assert sorted(p.name for p in (workdir / "trees").iterdir()) == [
        "iter0.parquet", "iter1-conciseness.parquet", "iter1-informativeness.parquet"]
    responses = policy.generate(PROMPTS, Preference.parse("conciseness=0.3,informativeness=0.7"),
                                GenerationConfig(max_new_tokens=3))
    assert len(responses) == 2
    saved = json.loads((workdir / recipe.RECIPE_FILE).read_text())
    assert saved["value_models"]["conciseness"].endswith("iter1/model")
    again = train_for_demo([concise, informative], workdir, model=str(tiny_model_dir), progress=False)
    assert again.training_cost == policy.training_cost
    with pytest.raises(ConfigError, match="unknown budget"):
        train_for_demo([concise], tmp_path / "other", budget="huge", model=str(tiny_model_dir))
