"""Baseline policies against the tiny model: what the model sees, and what the sweep charges them."""

import numpy as np
import pytest

from paretoalign.core import ConfigError, Preference
from paretoalign.evaluation.sweep import evaluate
from paretoalign.objectives.normalization import fit_reference_normalization
from paretoalign.generation import BasePolicy, GenerationConfig, generate, kl_to_reference
from paretoalign.methods.best_of_n import BestOfNPolicy, best_of_n_kl
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.objectives import load_objectives

PROMPTS = ["Explain the sky.", "How do I cook rice?"]
CONFIG = GenerationConfig(max_new_tokens=8, temperature=1.0, batch_size=8, seed=5)
CONCISE = Preference.parse("conciseness=1,informativeness=0")


@pytest.fixture(scope="module")
def objectives(tiny):
    scorers = load_objectives("conciseness,informativeness")
    fit_reference_normalization(scorers, BasePolicy(*tiny), PROMPTS, CONFIG)
    return scorers


def test_prompting_samples_the_base_model_on_the_steered_prompt(tiny):
    policy = PromptingPolicy(*tiny)
    steered = policy.steer(PROMPTS, CONCISE)
    direct = generate(*tiny, steered, CONFIG)
    answers = policy.generate(PROMPTS, CONCISE, CONFIG)
    assert [a.token_ids for a in answers] == [d.token_ids for d in direct]
    assert [a.prompt for a in answers] == PROMPTS
    assert policy.steer(PROMPTS, None) == PROMPTS


def test_prompting_kl_is_measured_against_the_plain_prompt(tiny, objectives):
    # π is the base model on the steered prompt, π_ref the base model on the user's prompt: the KL the
    # sweep reports is that divergence, not the (zero) one against the steered prompt.
    policy = PromptingPolicy(*tiny)
    result = evaluate(policy, objectives, PROMPTS, [CONCISE], config=CONFIG, progress=False)
    answers = policy.generate(PROMPTS, CONCISE, CONFIG)  # same seed: the answers the sweep scored
    plain = kl_to_reference(answers, *tiny, PROMPTS)
    steered = kl_to_reference(answers, *tiny, policy.steer(PROMPTS, CONCISE))
    assert np.abs(steered).max() < 1e-4 < np.abs(plain).max()
    assert result.points[0].kl == pytest.approx(plain.mean(), abs=1e-6)


def test_best_of_n_reports_its_selection_kl_and_draws_one_pool_per_seed(tiny, objectives):
    policy = BestOfNPolicy(*tiny, objectives, n=3)
    grid = [CONCISE, Preference.parse("conciseness=0,informativeness=1")]
    result = evaluate(policy, objectives, PROMPTS, grid, samples_per_prompt=2, config=CONFIG, progress=False)
    pools = policy._cache[1]
    assert sorted(pools) == [5, 6] and all(len(pool) == 3 * len(PROMPTS) for pool in pools.values())
    for point in result.points:
        # candidates come from π_ref itself at temperature 1, so all KL is the selection's
        assert point.kl == pytest.approx(best_of_n_kl(3), abs=1e-3)
    # every candidate is charged once: when drawn, at the first point; re-ranking is free
    assert result.points[0].tokens == sum(len(c.token_ids) for pool in pools.values() for c in pool)
    assert result.points[1].tokens == 0
    assert result.points[0].rewards["conciseness"] >= result.points[1].rewards["conciseness"]
    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(4) == pytest.approx(np.log(4) - 0.75)


def test_best_of_n_needs_a_preference(tiny, objectives):
    with pytest.raises(ConfigError, match="needs a preference"):
        BestOfNPolicy(*tiny, objectives).generate(PROMPTS, None, CONFIG)
