"""Experience making: layout and masks, π/π_ref log-probabilities against the sampler and kl_to_reference,
scores per objective, minibatches, and one-line errors (NaN scorer, non-LoRA policy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError, TrainingError
from paretoalign.generation import GenerationConfig, kl_to_reference
from paretoalign.models import attach_lora, reference_mode
from paretoalign.objectives import Conciseness, LengthCost, NormStats, Objective, count_words, scalarize
from paretoalign.objectives.builtin import Informativeness
from paretoalign.training.rl import ExperienceMaker


PROMPTS = ["Explain photosynthesis to a child.", "Write a short poem about the sea.", "How do I cook rice?"]


@pytest.fixture()
def policy(tiny_model_dir):
    """A fresh LoRA (B = 0) on the tiny model: the policy equals the reference."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return attach_lora(model, r=4, alpha=8)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def fitted(objective: Objective, mean: float = 10.0, std: float = 4.0) -> Objective:
    objective.stats = NormStats(mean, std, 10)
    return objective


def on_policy(**kwargs) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=0, top_p=1.0, batch_size=4, **kwargs)


class NaNScorer(Objective):
    name = "broken"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array([1.0] * (len(responses) - 1) + [float("nan")])


def perturb(policy) -> None:
    """Make the LoRA adapter non-zero so π differs from π_ref."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)


def test_layout_masks_scores_and_groups(policy, tokenizer):
    objectives = [fitted(Conciseness()), fitted(Informativeness())]
    maker = ExperienceMaker(policy, tokenizer, objectives, preference="conciseness=0.25,informativeness=0.75",
                            cost_objectives=[LengthCost(budget=3)], forward_batch_size=4)
    experience = maker.make(PROMPTS, on_policy(), samples_per_prompt=2)

    assert len(experience) == 6
    assert experience.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert experience.prompts == [p for p in PROMPTS for _ in range(2)]
    width = experience.sequences.shape[1]
    assert experience.attention_mask.shape == (6, width)
    start = width - experience.num_actions
    for row, response in enumerate(experience.responses):
        n = len(response.token_ids)
        assert experience.action_mask[row].tolist() == [True] * n + [False] * (experience.num_actions - n)
        assert experience.sequences[row, start : start + n].tolist() == response.token_ids
        assert experience.attention_mask[row, start:].tolist() == experience.action_mask[row].long().tolist()
    assert int(experience.response_lengths.sum()) == experience.generated_tokens
    assert experience.old_logprobs.shape == experience.ref_logprobs.shape == experience.action_mask.shape
    assert (experience.old_logprobs[~experience.action_mask] == 0).all()

    words = np.array([count_words(r.text) for r in experience.responses], dtype=np.float64)
    np.testing.assert_allclose(experience.rewards["conciseness"].numpy(), words, rtol=1e-6)
    np.testing.assert_allclose(experience.normalized["conciseness"].numpy(), -(words - 10) / 4, rtol=1e-5)
    np.testing.assert_allclose(experience.costs["length_cost"].numpy(), np.maximum(words - 3, 0), rtol=1e-6)
    expected = scalarize({k: v.numpy() for k, v in experience.normalized.items()},
                         "conciseness=0.25,informativeness=0.75")
    np.testing.assert_allclose(experience.scalar_reward.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_policy_logprobs_are_read_at_the_rollout_temperature_and_the_reference_untempered(policy, tokenizer):
    maker = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())], temperature=0.7)
    sampling = GenerationConfig(max_new_tokens=10, temperature=0.7, top_k=0, top_p=1.0, batch_size=4)
    experience = maker.make(PROMPTS, sampling)  # log-probs at temperature 1 would be off-policy
    untempered = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())]).make(PROMPTS, sampling)
    for row, response in enumerate(experience.responses):
        n = len(response.token_ids)
        torch.testing.assert_close(experience.old_logprobs[row, :n], torch.tensor(response.logprobs),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(experience.ref_logprobs[row, :n], untempered.ref_logprobs[row, :n])
    assert not torch.allclose(experience.old_logprobs, experience.ref_logprobs)  # π_0.7 is not π_ref


def test_fresh_adapter_gives_reference_logprobs_equal_to_the_samplers(policy, tokenizer):
    experience = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())]).make(PROMPTS, on_policy())
    torch.testing.assert_close(experience.old_logprobs, experience.ref_logprobs)
    assert experience.kl.abs().max() == 0
    for row, response in enumerate(experience.responses):
        n = len(response.token_ids)
        torch.testing.assert_close(experience.old_logprobs[row, :n], torch.tensor(response.logprobs),
                                   atol=1e-5, rtol=1e-5)


def test_kl_sums_match_kl_to_reference(policy, tokenizer):
    perturb(policy)
    experience = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())]).make(PROMPTS, on_policy(), 2)
    with reference_mode(policy):
        expected = kl_to_reference(experience.responses, policy, tokenizer)
    assert np.abs(expected).max() > 1e-3, "the perturbed adapter should move the policy"
    np.testing.assert_allclose(experience.kl.sum(dim=1).double().numpy(), expected, atol=1e-4, rtol=1e-4)


def test_minibatches_cover_every_rollout_once(policy, tokenizer):
    experience = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())]).make(PROMPTS, on_policy(), 3)
    batches = list(experience.minibatches(4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 1]
    seen = sorted(tuple(row.tolist()) for b in batches for row in b.sequences)
    assert seen == sorted(tuple(row.tolist()) for row in experience.sequences)
    first = batches[0]
    assert first.rewards["conciseness"].shape == (4,) and len(first.responses) == 4
    for i, response in enumerate(first.responses):
        assert first.prompts[i] == PROMPTS[int(first.prompt_index[i])] == response.prompt


def test_nan_scorer_names_the_objective(policy, tokenizer):
    maker = ExperienceMaker(policy, tokenizer, [fitted(Conciseness()), NaNScorer()])
    with pytest.raises(TrainingError, match="objective 'broken' returned nan") as error:
        maker.make(PROMPTS, on_policy())
    assert "\n" not in str(error.value)


def test_bad_inputs_are_one_line_errors(policy, tiny_model_dir, tokenizer):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ConfigError, match="LoRA adapter"):
        ExperienceMaker(plain, tokenizer, [fitted(Conciseness())])
    with pytest.raises(ConfigError, match="unknown objective 'simplicity'"):
        ExperienceMaker(policy, tokenizer, [fitted(Conciseness())], preference="simplicity=1")
    maker = ExperienceMaker(policy, tokenizer, [fitted(Conciseness())])
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        maker.make(PROMPTS, on_policy(), samples_per_prompt=0)
    with pytest.raises(ConfigError, match="normalization statistics"):
        ExperienceMaker(policy, tokenizer, [Conciseness()]).make(PROMPTS, on_policy())
