"""Rewarded Soups on tiny models: merging per preference, in-memory switching, refusals, per-objective training.

The LoRA delta merge itself is checked against PEFT's ``cat`` merge in ``test_models_interpolation.py``;
here the soup's mapping from a preference to its adapters is checked against the same peer.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from paretoalign.core.errors import ConfigError, ModelLoadError, UnknownObjectiveError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig, generate
from paretoalign.methods import get_recipe
from paretoalign.methods.soups import SoupPolicy
from paretoalign.models import attach_lora, load_adapter, save_adapter
from paretoalign.objectives import load_objectives
from tiny import make_tokenizer

PROMPTS = ["Explain photosynthesis to a child.", "How do I cook rice?"]
GREEDY = GenerationConfig(max_new_tokens=8, do_sample=False, seed=0)
TEXT = "Give me three tips for better sleep tonight."


def _base(folder):
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def _save_random_adapter(base_folder, target, name, seed, r=4):
    """A LoRA adapter on the model in ``base_folder`` with random (non-zero) A and B, saved to ``target``."""
    peft_model = attach_lora(_base(base_folder), name, r=r, alpha=2 * r)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in peft_model.named_parameters():
            if "lora_" in key:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return save_adapter(peft_model, name, target)


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("soup-adapters")
    return {
        "simplicity": _save_random_adapter(tiny_model_dir, root / "simplicity", "simple", seed=1),
        "informativeness": _save_random_adapter(tiny_model_dir, root / "informativeness", "informative", seed=2, r=8),
    }


@pytest.fixture
def soup(tiny, tiny_model_dir, adapter_dirs):
    return SoupPolicy(_base(tiny_model_dir), tiny[1], adapter_dirs)


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(TEXT, return_tensors="pt")).logits


def _tokens(responses):
    return [response.token_ids for response in responses]


def test_all_weight_on_one_objective_reproduces_its_adapter(soup, tiny, tiny_model_dir, adapter_dirs):
    tokenizer = tiny[1]
    for objective, folder in adapter_dirs.items():
        alone = load_adapter(_base(tiny_model_dir), folder, "alone")
        expected = generate(alone, tokenizer, PROMPTS, GREEDY)
        preference = Preference.parse({objective: 1.0})
        assert _tokens(soup.generate(PROMPTS, preference, GREEDY)) == _tokens(expected)


def test_soup_equals_peft_cat_merge_of_the_preference_weights(soup, tiny, tiny_model_dir, adapter_dirs):
    tokenizer = tiny[1]
    peer = load_adapter(_base(tiny_model_dir), adapter_dirs["simplicity"], "simple")
    load_adapter(peer, adapter_dirs["informativeness"], "informative")
    peer.add_weighted_adapter(["simple", "informative"], [0.3, 0.7], "peer", combination_type="cat")
    peer.set_adapter("peer")
    # objectives named in another order than the soup's: weights must follow the names
    soup.merge(Preference.parse("informativeness=0.7,simplicity=0.3"))
    torch.testing.assert_close(_logits(soup.model, tokenizer), _logits(peer, tokenizer), rtol=1e-5, atol=1e-5)


def test_merged_output_moves_with_the_weights(soup, tiny):
    tokenizer = tiny[1]
    outputs = []
    for weights in ("simplicity=0.8,informativeness=0.2", "simplicity=0.5,informativeness=0.5",
                    "simplicity=0.2,informativeness=0.8"):
        soup.merge(Preference.parse(weights))
        outputs.append(_logits(soup.model, tokenizer))
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)
    assert not torch.allclose(outputs[1], outputs[2], atol=1e-4)
    # the delta merge is linear in w: the midpoint's logits sit between the ends' (first order, small deltas)
    assert (outputs[1] - outputs[0]).norm() < (outputs[2] - outputs[0]).norm()


def test_switching_preferences_needs_no_files_and_reuses_the_last_merge(tiny, tiny_model_dir, adapter_dirs, tmp_path):
    copies = {name: shutil.copytree(folder, tmp_path / name) for name, folder in adapter_dirs.items()}
    policy = SoupPolicy(_base(tiny_model_dir), tiny[1], copies)
    shutil.rmtree(tmp_path / "simplicity")
    shutil.rmtree(tmp_path / "informativeness")
    seen = []
    for weights in ("simplicity=0.9,informativeness=0.1", "simplicity=0.1,informativeness=0.9",
                    "simplicity=1,informativeness=0"):
        seen.append(_tokens(policy.generate(PROMPTS, Preference.parse(weights), GREEDY)))
    assert len({json.dumps(tokens) for tokens in seen}) > 1
    mixed = Preference.parse("simplicity=0.4,informativeness=0.6")
    model = policy.merge(mixed)
    merged_b = next(m for m in model.modules() if hasattr(m, "lora_B") and "merged" in m.lora_B).lora_B["merged"]
    with torch.no_grad():
        merged_b.weight.mul_(2.0)  # a marker: an unchanged preference must not re-merge over it
    doubled = merged_b.weight.clone()
    policy.merge(mixed)
    assert torch.equal(merged_b.weight, doubled)
    policy.merge(Preference.parse("simplicity=0.5,informativeness=0.5"))
    policy.merge(mixed)
    torch.testing.assert_close(merged_b.weight * 2.0, doubled)


def test_reference_is_the_base_with_adapters_off(soup, tiny):
    model, tokenizer = tiny
    soup.merge(Preference.parse("simplicity=0.5,informativeness=0.5"))
    merged = _logits(soup.model, tokenizer)
    reference, _ = soup.reference()
    torch.testing.assert_close(_logits(reference, tokenizer), _logits(model, tokenizer))
    torch.testing.assert_close(_logits(soup.model, tokenizer), merged)  # adapters back on afterwards
    assert not torch.allclose(merged, _logits(model, tokenizer), atol=1e-4)


def test_full_model_soup_interpolates_the_weights(tiny, tiny_model_dir, tiny_model_dir_b):
    first, second = _base(tiny_model_dir), _base(tiny_model_dir_b)
    policy = SoupPolicy(_base(tiny_model_dir), tiny[1], {"a": tiny_model_dir, "b": tiny_model_dir_b})
    soup_model = policy.merge(Preference.parse("a=0.25,b=0.75"))
    for key, tensor in soup_model.state_dict().items():
        torch.testing.assert_close(tensor, 0.25 * first.state_dict()[key] + 0.75 * second.state_dict()[key])
    reference, _ = policy.reference()
    torch.testing.assert_close(_logits(reference, tiny[1]), _logits(first, tiny[1]))
    with pytest.raises(ConfigError, match="mode 'average_ab' applies to LoRA adapters only"):
        SoupPolicy(_base(tiny_model_dir), tiny[1], {"a": tiny_model_dir}, mode="average_ab")


@pytest.fixture(scope="module")
def wider_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with hidden size 48 instead of 32, and its own (same) tokenizer."""
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    folder = tmp_path_factory.mktemp("wider")
    LlamaForCausalLM(config).save_pretrained(folder)
    shutil.copy(tiny_model_dir / "tokenizer.json", folder)
    shutil.copy(tiny_model_dir / "tokenizer_config.json", folder)
    return folder


def test_adapters_of_another_architecture_are_refused_before_touching_the_base(
    tiny, tiny_model_dir, wider_model_dir, adapter_dirs, tmp_path
):
    foreign = _save_random_adapter(wider_model_dir, tmp_path / "wide", "wide", seed=3)
    base = _base(tiny_model_dir)
    models = {"simplicity": adapter_dirs["simplicity"], "informativeness": foreign}
    with pytest.raises(ConfigError, match=r"adapter 'informativeness' \(trained on '.*wider.*'\) does not fit the base "
                                          r"model '.*tiny-llama.*': layer '.*' has \d+ features in the base but \d+ in the adapter"):
        SoupPolicy(base, tiny[1], models)
    assert not any("lora" in name for name, _ in base.named_modules())


def test_full_models_of_another_architecture_are_refused(tiny, tiny_model_dir, wider_model_dir):
    with pytest.raises(ConfigError, match=r"model for 'b' \('.*wider.*': LlamaForCausalLM, 2 layers, hidden size 48\) "
                                          r"and the base '.*tiny-llama.*' \(.*hidden size 32\) have different architectures"):
        SoupPolicy(_base(tiny_model_dir), tiny[1], {"a": tiny_model_dir, "b": wider_model_dir})


def test_a_broken_full_model_folder_is_a_one_line_load_error(tiny, tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError) as raised:
        SoupPolicy(_base(tiny_model_dir), tiny[1], {"a": tiny_model_dir, "b": broken})
    assert "broken" in str(raised.value) and "\n" not in str(raised.value)


def test_a_model_with_another_tokenizer_is_refused(tiny, tiny_model_dir, adapter_dirs, tmp_path):
    other = shutil.copytree(adapter_dirs["informativeness"], tmp_path / "other-tokenizer")
    make_tokenizer(vocab_size=300).save_pretrained(other)
    with pytest.raises(ConfigError, match=r"tokenizer of 'informativeness' .* differs from that of .*; per-objective models must share"):
        SoupPolicy(_base(tiny_model_dir), tiny[1], {"simplicity": adapter_dirs["simplicity"], "informativeness": other})


def test_preferences_the_soup_cannot_serve_are_refused(soup, tiny_model_dir, adapter_dirs, tiny):
    with pytest.raises(UnknownObjectiveError, match="the soups soup has no policy for objective 'friendliness'; it "
                                                    "was trained for simplicity, informativeness"):
        soup.generate(PROMPTS, Preference.parse("simplicity=0.5,friendliness=0.5"), GREEDY)
    with pytest.raises(ConfigError, match="the soups soup needs a preference"):
        soup.generate(PROMPTS, None, GREEDY)
    with pytest.raises(ConfigError, match="mixes LoRA adapters and full models"):
        SoupPolicy(_base(tiny_model_dir), tiny[1], {"a": adapter_dirs["simplicity"], "b": tiny_model_dir})


TINY = dict(prompts=4, samples=3, max_new_tokens=10, epochs=1, batch_size=2, lr=1e-3, max_length=96, progress=False)


def test_fit_trains_one_adapter_per_objective_and_load_serves_their_soup(tiny, tiny_model_dir, tmp_path):
    recipe = get_recipe("soups")
    config = recipe.config("quick", model=str(tiny_model_dir), **TINY)
    run = recipe.fit("conciseness,simplicity", tmp_path / "run", config)
    policies = run.manifest["policies"]
    assert list(policies) == ["conciseness", "simplicity"]
    for entry in policies.values():
        folder = run.path / entry["adapter"]
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert entry["pairs"] + entry["tied_prompts"] == TINY["prompts"] and entry["steps"] >= 1
    samples = TINY["prompts"] * TINY["samples"]
    compute = run.compute
    assert samples <= compute["generated_tokens"] <= samples * TINY["max_new_tokens"]
    assert compute["trained_tokens"] == sum(entry["trained_tokens"] for entry in policies.values()) > 0
    assert compute["wall_time_s"] > 0
    policy = recipe.load(run.path, device="cpu", dtype="float32")
    assert policy.name == "soups" and policy.objectives == ["conciseness", "simplicity"]
    assert policy.training_cost == compute
    mixed = policy.generate(PROMPTS, Preference.parse("conciseness=0.5,simplicity=0.5"), GREEDY)
    assert len(mixed) == len(PROMPTS) and mixed[0].meta["steering"]["merge_weights"] == {
        "conciseness": 0.5, "simplicity": 0.5}


def test_ppo_trains_one_adapter_per_objective_and_counts_its_rollouts(tiny, tiny_model_dir, tmp_path):
    recipe = get_recipe("soups")
    config = recipe.config("full", model=str(tiny_model_dir), prompts=8, ppo_steps=1, max_new_tokens=8, progress=False)
    run = recipe.fit("conciseness,informativeness", tmp_path / "run", config)
    policies = run.manifest["policies"]
    assert [entry["trainer"] for entry in policies.values()] == ["ppo", "ppo"]
    assert all(entry["steps"] == 1 and entry["generated_tokens"] > 0 for entry in policies.values())
    assert run.compute["generated_tokens"] == sum(entry["generated_tokens"] for entry in policies.values())
    assert run.manifest["normalization"]["conciseness"]["count"] > 0  # fitted on the base model before PPO
    policy = recipe.load(run.path, device="cpu", dtype="float32")
    assert len(policy.generate(PROMPTS, Preference.parse("conciseness=0.5,informativeness=0.5"), GREEDY)) == 2


def test_unknown_trainers_and_bad_settings_are_refused(tmp_path):
    recipe = get_recipe("soups")
    with pytest.raises(ConfigError, match="trainer 'sft' is not one of dpo, ppo"):
        recipe.config(trainer="sft")
    with pytest.raises(ConfigError, match="appears twice"):
        recipe.fit("conciseness,conciseness", tmp_path / "run", recipe.config(progress=False))
    with pytest.raises(ConfigError, match="samples must be >= 2"):
        recipe.config(samples=1)
