"""KL to the reference: teacher-forced log-probabilities agree with the sampler's, KL > 0 when tilted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.generation import (
    GenerationConfig,
    generate,
    kl_to_reference,
    prompt_token_ids,
    sequence_logprobs,
)

PROMPTS = ["Hello there", "Explain photosynthesis to a child.", "a", "Write a short poem about the sea."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def sharp_model(tiny_model_dir):
    """The tiny Llama with larger random weights, so temperature changes its distribution markedly."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def untruncated(temperature: float, **kwargs) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=12, temperature=temperature, top_k=0, top_p=1.0, **kwargs)


def test_sampling_from_the_reference_gives_its_teacher_forced_logprobs(model, tokenizer):
    responses = generate(model, tokenizer, PROMPTS, untruncated(1.0, batch_size=3))
    reference = sequence_logprobs(model, tokenizer, PROMPTS, [r.token_ids for r in responses], batch_size=3)
    for response, ref in zip(responses, reference):
        assert ref.shape == (len(response.token_ids),)
        torch.testing.assert_close(torch.tensor(response.logprobs), ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(kl_to_reference(responses, model, tokenizer), 0.0, atol=1e-4)


@pytest.mark.parametrize("batch_size", [16, 2])  # 2: rows batched by length, answered in the given order
def test_teacher_forcing_matches_an_unpadded_forward(model, tokenizer, batch_size):
    ids = [[5, 17, 42], [], [300, 2, 9, 9, 11]]
    logprobs = sequence_logprobs(model, tokenizer, PROMPTS[:3], ids, batch_size=batch_size)
    for prompt, response, got in zip(prompt_token_ids(tokenizer, PROMPTS[:3]), ids, logprobs):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(response, dtype=torch.long)[:, None])
        torch.testing.assert_close(got, expected.squeeze(-1), atol=1e-5, rtol=1e-5)


def test_cooler_sampling_has_positive_kl_matching_its_expectation(sharp_model, tokenizer):
    """The sampled estimate Σ_t log π_T/π_ref is unbiased for the exact per-step KL summed along the
    path (computed here from the full distributions), and clearly positive at temperature 0.5."""
    temperature = 0.5
    responses = generate(sharp_model, tokenizer, PROMPTS * 8, untruncated(temperature, seed=7))
    estimate = kl_to_reference(responses, sharp_model, tokenizer)
    exact = []
    for ids, response in zip(prompt_token_ids(tokenizer, PROMPTS * 8), responses):
        with torch.no_grad():
            logits = sharp_model(torch.tensor([ids + response.token_ids])).logits[0, len(ids) - 1 : -1]
        policy, reference = (logits / temperature).log_softmax(-1), logits.log_softmax(-1)
        exact.append(float((policy.exp() * (policy - reference)).sum()))
    difference = estimate - np.array(exact)
    assert estimate.shape == (len(responses),)
    assert estimate.mean() > 1.0
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(len(difference))


def test_reference_sees_the_prompt_it_is_given(model, tokenizer):
    steering = "Answer like a pirate."
    responses = generate(model, tokenizer, PROMPTS, untruncated(1.0, system_prompt=steering))
    same_context = kl_to_reference(responses, model, tokenizer, system_prompt=steering)
    plain_context = kl_to_reference(responses, model, tokenizer, prompts=PROMPTS)
    np.testing.assert_allclose(same_context, 0.0, atol=1e-4)
    assert np.abs(plain_context).max() > 1e-3


def test_mismatched_prompts_raise_config_error(model, tokenizer):
    with pytest.raises(ConfigError):
        sequence_logprobs(model, tokenizer, PROMPTS, [[1, 2]])


def test_base_policy_samples_carry_the_teacher_forced_reference_logprobs(sharp_model, tokenizer):
    """π_ref's own samples record log π_ref at T=1 while sampling (top-p and temperature warp only the sampling), so
    the sweep's KL of base and best-of-N needs no second pass; it equals the teacher-forced KL."""
    from paretoalign.evaluation.sweep import _sequence_kl
    from paretoalign.generation import BasePolicy
    from paretoalign.generation.policy import REFERENCE_LOGPROBS

    config = GenerationConfig(max_new_tokens=12, temperature=0.6, top_p=0.8, seed=2, batch_size=3)
    responses = BasePolicy(sharp_model, tokenizer).generate(PROMPTS, None, config)
    forced = sequence_logprobs(sharp_model, tokenizer, PROMPTS, [r.token_ids for r in responses])
    for response, values in zip(responses, forced):
        assert response.meta[REFERENCE_LOGPROBS] == pytest.approx(values.tolist(), abs=1e-4)
    recorded = _sequence_kl(responses, PROMPTS, (sharp_model, tokenizer), config)
    plain = [type(r)(r.prompt, r.text, r.token_ids, r.logprobs, r.finish_reason) for r in responses]
    assert recorded == pytest.approx(_sequence_kl(plain, PROMPTS, (sharp_model, tokenizer), config), abs=1e-3)
    assert (recorded > 0.1).all()  # the warped sampler is far from π_ref at T=1
    assert REFERENCE_LOGPROBS not in generate(sharp_model, tokenizer, PROMPTS[:1], config)[0].meta
