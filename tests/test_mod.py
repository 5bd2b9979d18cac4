"""MOD: weights (1, 0, ...) reproduce policy 1, fused log-probabilities equal a slow recompute for all
three divergences (LoRA adapters and separate models), batched adapters equal per-adapter forwards,
zero weights cost no forward, and bad input ends in one-line errors."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tiny import make_tokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig, encode_prompts, generate, kl_to_reference, prompt_token_ids
from paretoalign.generation.fusion import AdapterRowsScorer, fuse_logprobs
from paretoalign.methods.mod import MODPolicy
from paretoalign.models.lora import attach_lora, set_active_adapter

PROMPTS = ["Hello there", "Explain photosynthesis to a child in simple words.", "a"]
OBJECTIVES = ["simplicity", "friendliness"]


def _random_model(folder, seed: int):
    """The tiny Llama from ``folder`` re-initialised with larger weights (distinct, non-degenerate outputs)."""
    config = AutoConfig.from_pretrained(folder)
    config.initializer_range = 0.3
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return _random_model(tiny_model_dir, seed=0)


@pytest.fixture(scope="module")
def models(tiny_model_dir, base):
    return [base, _random_model(tiny_model_dir, seed=1)]


@pytest.fixture(scope="module")
def peft(base):
    """A copy of the base with one LoRA adapter per objective, each with random non-zero B."""
    model = attach_lora(copy.deepcopy(base), OBJECTIVES[0], r=4)
    attach_lora(model, OBJECTIVES[1], r=4)
    torch.manual_seed(2)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    return model.eval()


def _single_policy(peft_or_models, index: int):
    """Policy ``index`` on its own: its adapter made active, or its model."""
    if isinstance(peft_or_models, list):
        return peft_or_models[index]
    return set_active_adapter(peft_or_models, OBJECTIVES[index])


@pytest.mark.parametrize("kind", ["adapters", "models"])
@pytest.mark.parametrize("index", [0, 1])
def test_one_weight_reproduces_that_policy(kind, index, request, tokenizer):
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    mod = MODPolicy(policies, tokenizer, OBJECTIVES)
    alone = _single_policy(policies, index)
    preference = Preference.parse({OBJECTIVES[index]: 1.0, OBJECTIVES[1 - index]: 0.0})
    for config in (GenerationConfig(max_new_tokens=10, do_sample=False), GenerationConfig(max_new_tokens=10, seed=7)):
        expected = generate(alone, tokenizer, PROMPTS, config)
        fused = mod.generate(PROMPTS, preference, config)
        assert [r.token_ids for r in fused] == [r.token_ids for r in expected]
        for ours, theirs in zip(fused, expected):
            assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)


def _slow_fused(policy_logprobs: list[torch.Tensor], weights: list[float], divergence: str, alpha: float) -> torch.Tensor:
    """The fused score written out term by term in float64, as METHODS.md states it."""
    total = torch.zeros_like(policy_logprobs[0])
    for weight, logprobs in zip(weights, policy_logprobs):
        if divergence == "reverse_kl":
            total += weight * logprobs
        else:
            total += weight * logprobs.exp() ** (-(1.0 if divergence == "forward_kl" else alpha))
    return total if divergence == "reverse_kl" else -total.log()


def _full_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log π(·|ids) recomputed from scratch: one unpadded forward, no cache."""
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)


@pytest.mark.parametrize("kind", ["adapters", "models"])
@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "alpha"])
def test_fused_logprobs_match_a_slow_recompute(kind, divergence, request, tokenizer):
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    weights, alpha, temperature = [0.3, 0.7], 0.6, 0.8
    mod = MODPolicy(policies, tokenizer, OBJECTIVES, divergence=divergence, alpha=alpha)
    config = GenerationConfig(max_new_tokens=6, temperature=temperature, seed=3)
    responses = mod.generate(PROMPTS, Preference.parse(dict(zip(OBJECTIVES, weights))), config)
    for prompt_ids, response in zip(prompt_token_ids(tokenizer, PROMPTS), responses):
        for step, token in enumerate(response.token_ids):
            context = prompt_ids + response.token_ids[:step]
            per_policy = [_full_logprobs(_single_policy(policies, k), context) for k in range(2)]
            sampled = torch.log_softmax(_slow_fused(per_policy, weights, divergence, alpha) / temperature, dim=-1)
            assert response.logprobs[step] == pytest.approx(float(sampled[token]), abs=1e-4)


def test_batched_adapter_forward_equals_separate_adapter_forwards(peft, tokenizer):
    batch = encode_prompts(tokenizer, PROMPTS)
    lora_layers = [module for module in peft.modules() if isinstance(module, LoraLayer)]
    with torch.inference_mode():
        stacked = AdapterRowsScorer(peft, OBJECTIVES).start(batch["input_ids"], batch["attention_mask"])
        with AdapterRowsScorer(peft, OBJECTIVES) as routed:  # hooks set once for the decode
            assert all(layer._forward_pre_hooks for layer in lora_layers)
            torch.testing.assert_close(routed.start(batch["input_ids"], batch["attention_mask"]), stacked)
        assert not any(layer._forward_pre_hooks for layer in lora_layers)
        separate = []
        for name in OBJECTIVES:
            set_active_adapter(peft, name)
            position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            separate.append(peft(**batch, position_ids=position_ids).logits[:, -1])
    torch.testing.assert_close(stacked, torch.cat(separate), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(separate[0], separate[1], atol=1e-2)  # the adapters really differ


def _rows_seen(model) -> list[int]:
    """Attach a recorder of the batch sizes that reach ``model``'s embedding layer."""
    seen: list[int] = []
    embeddings = model.get_input_embeddings()
    embeddings.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    return seen


def test_zero_weight_policies_run_no_forward(tiny_model_dir, tokenizer):
    models = [_random_model(tiny_model_dir, seed=0), _random_model(tiny_model_dir, seed=1)]
    seen = [_rows_seen(model) for model in models]
    mod = MODPolicy(models, tokenizer, OBJECTIVES)
    mod.generate(PROMPTS, Preference.parse("simplicity=1"), GenerationConfig(max_new_tokens=3))
    assert seen[0] and not seen[1]
    peft = attach_lora(_random_model(tiny_model_dir, seed=0), OBJECTIVES[0], r=2)
    attach_lora(peft, OBJECTIVES[1], r=2)
    rows = _rows_seen(peft)
    mod = MODPolicy(peft, tokenizer, OBJECTIVES)
    mod.generate(PROMPTS, Preference.parse("friendliness=1"), GenerationConfig(max_new_tokens=3, min_new_tokens=3))
    mod.generate(PROMPTS, Preference.parse("friendliness=0.5,simplicity=0.5"), GenerationConfig(max_new_tokens=1))
    assert rows == [len(PROMPTS)] * 3 + [2 * len(PROMPTS)]


def test_alpha_one_is_forward_kl_and_fusion_keeps_impossible_tokens_impossible():
    logprobs = torch.log_softmax(torch.randn(2, 3, 5), dim=-1)
    logprobs[1, :, 0] = float("-inf")
    forward = fuse_logprobs(logprobs, [0.4, 0.6], "forward_kl")
    torch.testing.assert_close(forward, fuse_logprobs(logprobs, [0.4, 0.6], "alpha", alpha=1.0))
    assert torch.isneginf(forward[:, 0]).all() and torch.isneginf(fuse_logprobs(logprobs, [0.4, 0.6])[:, 0]).all()
    assert torch.isfinite(forward[:, 1:]).all()


@pytest.mark.parametrize("kind", ["adapters", "models"])
def test_beam_search_over_the_fused_score(kind, request, tokenizer):
    """Q=1 is policy 1's greedy output; with Q=3 each beam's score is the sum of the slow fused log-probs
    (beams copy rows of every policy's cache, so a wrong copy shows up here)."""
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    greedy = generate(_single_policy(policies, 0), tokenizer, PROMPTS, GenerationConfig(max_new_tokens=8, do_sample=False))
    one_beam = MODPolicy(policies, tokenizer, OBJECTIVES, beams=1).generate(
        PROMPTS, Preference.parse("simplicity=1"), GenerationConfig(max_new_tokens=8, do_sample=False))
    assert [r.token_ids for r in one_beam] == [r.token_ids for r in greedy]
    weights = [0.4, 0.6]
    beamed = MODPolicy(policies, tokenizer, OBJECTIVES, divergence="forward_kl", beams=3).generate(
        PROMPTS, Preference.parse(dict(zip(OBJECTIVES, weights))), GenerationConfig(max_new_tokens=5))
    for prompt_ids, response in zip(prompt_token_ids(tokenizer, PROMPTS), beamed):
        expected = 0.0
        for step, token in enumerate(response.token_ids):
            context = prompt_ids + response.token_ids[:step]
            per_policy = [_full_logprobs(_single_policy(policies, k), context) for k in range(2)]
            expected += float(torch.log_softmax(_slow_fused(per_policy, weights, "forward_kl", 0.5), dim=-1)[token])
        assert response.meta["beam_score"] == pytest.approx(expected, abs=1e-4)
        assert response.logprobs == [0.0] * len(response.token_ids)


def test_reference_is_the_base_with_adapters_off(base, peft, models, tokenizer):
    reference, _ = MODPolicy(peft, tokenizer, OBJECTIVES).reference()
    batch = encode_prompts(tokenizer, PROMPTS[:1])
    with torch.inference_mode():
        torch.testing.assert_close(reference(**batch).logits, base(**batch).logits)
    responses = MODPolicy(peft, tokenizer, OBJECTIVES).generate(
        PROMPTS, Preference.parse("simplicity=0.5,friendliness=0.5"), GenerationConfig(max_new_tokens=4))
    assert (kl_to_reference(responses, reference, tokenizer) != 0).all()
    assert MODPolicy(models, tokenizer, OBJECTIVES).reference()[0] is models[0]
    assert MODPolicy(models, tokenizer, OBJECTIVES, reference_model=base).reference()[0] is base


def test_bad_input_is_refused_in_one_line(peft, models, tokenizer):
    other = make_tokenizer(vocab_size=300)
    with pytest.raises(ConfigError, match="'simplicity' and 'friendliness' have different tokenizers"):
        MODPolicy(models, [tokenizer, other], OBJECTIVES)
    mod = MODPolicy(peft, tokenizer, OBJECTIVES)
    with pytest.raises(ConfigError, match="no policy for objective 'relevance'"):
        mod.generate(PROMPTS, Preference.parse("relevance=0.5,simplicity=0.5"), GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="needs a preference"):
        mod.generate(PROMPTS, None, GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="no adapter named 'missing'"):
        MODPolicy(peft, tokenizer, OBJECTIVES, adapter_names=["missing", OBJECTIVES[1]])
    with pytest.raises(ConfigError, match="unknown divergence"):
        MODPolicy(peft, tokenizer, OBJECTIVES, divergence="js")
    with pytest.raises(ConfigError, match="alpha > 0"):
        MODPolicy(peft, tokenizer, OBJECTIVES, divergence="alpha", alpha=0.0)
    with pytest.raises(ConfigError, match="one per objective"):
        MODPolicy(models[:1], tokenizer, OBJECTIVES)
    with pytest.raises(ConfigError, match="beams"):
        MODPolicy(peft, tokenizer, OBJECTIVES, beams=0)
    with pytest.raises(ConfigError) as info:
        MODPolicy(models, [tokenizer, other], OBJECTIVES)
    assert "\n" not in str(info.value)


def test_train_for_demo_fuses_the_soups_adapters_and_reloads_them(tiny_model_dir, tmp_path):
    from paretoalign.methods import mod
    from paretoalign.methods.soups import COMPUTE_FILE, SoupsBudget, read_compute
    from paretoalign.objectives import load_objectives

    objectives = load_objectives("conciseness,simplicity")
    budget = SoupsBudget(prompts=4, samples=3, max_new_tokens=8, epochs=1, batch_size=2, lr=1e-3, max_length=96)
    policy = mod.train_for_demo(objectives, tmp_path, budget=budget, model=str(tiny_model_dir), progress=False)
    compute = read_compute(tmp_path)
    assert policy.name == "mod" and policy.objectives == ["conciseness", "simplicity"]
    assert policy.training_cost == {key: compute[key] for key in mod.TRAINING_COST_KEYS}
    assert policy.training_cost["trained_tokens"] > 0
    written = (tmp_path / COMPUTE_FILE).stat().st_mtime_ns
    again = mod.train_for_demo(objectives, tmp_path, model=str(tiny_model_dir), progress=False)
    assert (tmp_path / COMPUTE_FILE).stat().st_mtime_ns == written  # reloaded, not retrained
    config = GenerationConfig(max_new_tokens=5, seed=1)
    preference = Preference.parse("conciseness=0.4,simplicity=0.6")
    assert [r.token_ids for r in again.generate(PROMPTS, preference, config)] == [
        r.token_ids for r in policy.generate(PROMPTS, preference, config)
    ]
