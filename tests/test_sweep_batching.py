"""Sweeps batched across the grid: seeds per preference, one call per sample pass, soups mixed per row.

Oracles: the same sweep point by point (a policy that does not mix preferences), per-preference calls, and the
soup merged by PEFT's ``add_weighted_adapter`` for each row's weights.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core import ConfigError, Preference
from paretoalign.evaluation import build_results, weight_grid
from paretoalign.evaluation.sweep import batches_grid, evaluate
from paretoalign.generation import BasePolicy, GenerationConfig, generate, sequence_seeds
from paretoalign.methods.best_of_n import BestOfNPolicy
from paretoalign.methods.common.mod_policy import MODPolicy
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.methods.soups import SoupPolicy
from paretoalign.models import attach_lora, load_adapter, load_adapters, save_adapter
from paretoalign.objectives import load_objectives
from paretoalign.objectives.normalization import fit_reference_normalization

PROMPTS = ["Explain the sky.", "How do I cook rice?", "Explain the sky.", "Write a poem about the sea."]
SAMPLED = GenerationConfig(max_new_tokens=8, temperature=1.0, batch_size=3, seed=5)
GREEDY = GenerationConfig(max_new_tokens=8, do_sample=False, batch_size=3)
AXES = ["conciseness", "informativeness"]
A, B = Preference.parse("conciseness=0.8,informativeness=0.2"), Preference.parse("conciseness=0.3,informativeness=0.7")


def _tokens(responses):
    return [response.token_ids for response in responses]


def _per_preference(policy, prompts, preferences, config):
    """The oracle: each row answered by a call for its preference alone."""
    alone = {item: iter(policy.generate([p for p, q in zip(prompts, preferences) if q == item], item, config))
             for item in dict.fromkeys(preferences)}
    return [next(alone[item]) for item in preferences]


def test_seeds_of_one_group_are_todays_and_groups_draw_as_calls_of_their_own():
    prompts = ["a", "b", "a", "c", "a"]
    today = [6227063988911059949, 8710500244194432695, 2896725123639318873, 8289806513231521038, 431635816539193728]
    assert sequence_seeds(7, prompts) == today
    assert sequence_seeds(7, prompts, ["x"] * 5) == today
    groups = ["x", "x", "y", "y", "x"]
    mixed = sequence_seeds(7, prompts, groups)
    for group in "xy":
        rows = [i for i, g in enumerate(groups) if g == group]
        assert [mixed[i] for i in rows] == sequence_seeds(7, [prompts[i] for i in rows])
    with pytest.raises(ConfigError, match="2 seed groups for 5 prompts"):
        sequence_seeds(7, prompts, ["x", "y"])


def test_generate_with_seed_groups_draws_what_each_group_alone_draws(tiny):
    model, tokenizer = tiny
    prompts = PROMPTS + PROMPTS
    groups = [A] * len(PROMPTS) + [B] * len(PROMPTS)
    mixed = generate(model, tokenizer, prompts, SAMPLED, seed_groups=groups)
    alone = generate(model, tokenizer, PROMPTS, SAMPLED)
    assert _tokens(mixed[: len(PROMPTS)]) == _tokens(alone) == _tokens(mixed[len(PROMPTS):])
    assert _tokens(generate(model, tokenizer, prompts, SAMPLED))[len(PROMPTS):] != _tokens(alone)


@pytest.fixture(scope="module")
def objectives(tiny):
    scorers = load_objectives("conciseness,informativeness")
    fit_reference_normalization(scorers, BasePolicy(*tiny), PROMPTS, SAMPLED)
    return scorers


def _assert_same_results(batched, pointwise, key=""):
    """results.json contents equal but for wall times, and KL to float rounding (a sampled token's log-probability
    rounds with its batch's padding; the tokens themselves are the same)."""
    if isinstance(batched, dict):
        assert list(batched) == list(pointwise), key
        for name in batched:
            if "seconds" not in name:
                _assert_same_results(batched[name], pointwise[name], name if "kl" in name else key)
    elif isinstance(batched, list):
        assert len(batched) == len(pointwise), key
        for a, b in zip(batched, pointwise):
            _assert_same_results(a, b, key)
    elif "kl" in key and isinstance(batched, float):
        assert batched == pytest.approx(pointwise, rel=1e-4, abs=1e-6), key
    else:
        assert batched == pointwise, key


class _OneAtATime:
    """``policy`` declared unable to mix preferences, so the sweep runs it point by point."""

    mixes_preferences = False

    def __init__(self, policy):
        self.policy = policy
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def generate(self, prompts, preference, config):
        self.calls += 1
        return self.policy.generate(prompts, preference, config)


class _Counting(_OneAtATime):
    mixes_preferences = True


def _sweeps_agree(make_policy, objectives, samples=2):
    grid = weight_grid(AXES, 4)
    batched, pointwise = _Counting(make_policy()), _OneAtATime(make_policy())
    assert batches_grid(batched) and not batches_grid(pointwise)
    one = evaluate(batched, objectives, PROMPTS, grid, samples, SAMPLED, progress=False)
    each = evaluate(pointwise, objectives, PROMPTS, grid, samples, SAMPLED, progress=False)
    assert (batched.calls, pointwise.calls) == (samples, samples * len(grid))
    _assert_same_results(build_results([one]), build_results([each]))
    return one


def test_a_prompting_sweep_batched_across_the_grid_equals_point_by_point(tiny, objectives):
    result = _sweeps_agree(lambda: PromptingPolicy(*tiny), objectives)
    assert all(point.seconds > 0 for point in result.points)


def test_a_best_of_n_sweep_draws_one_pool_and_counts_its_tokens_once(tiny, objectives):
    result = _sweeps_agree(lambda: BestOfNPolicy(*tiny, objectives, n=3), objectives, samples=1)
    assert result.points[0].tokens > 0 and all(point.tokens == 0 for point in result.points[1:])


def test_base_policies_still_generate_once_for_the_whole_grid(tiny, objectives):
    assert not batches_grid(BasePolicy(*tiny))


ADAPTERS = ("conciseness", "informativeness")


def _base(folder):
    return AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
    """Two LoRA adapters with random non-zero A and B (one rank and alpha, so average_ab applies too)."""
    root = tmp_path_factory.mktemp("mixing-adapters")
    folders = {}
    for seed, (objective, rank) in enumerate(zip(ADAPTERS, (4, 4))):
        peft_model = attach_lora(_base(tiny_model_dir), f"a{seed}", r=rank, alpha=2 * rank)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for key, param in peft_model.named_parameters():
                if "lora_" in key:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.4)
        folders[objective] = save_adapter(peft_model, f"a{seed}", root / objective)
    return folders


@pytest.fixture(scope="module")
def soup(tiny, tiny_model_dir, adapter_dirs):
    return SoupPolicy(_base(tiny_model_dir), tiny[1], adapter_dirs)


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_mixed_soup_call_equals_a_call_per_preference(soup, config):
    assert soup.mixes_preferences
    prompts = PROMPTS + PROMPTS[:3]
    preferences = [A, B, A, B, Preference.parse("conciseness=1,informativeness=0"), B, A]
    mixed = soup.generate(prompts, preferences, config)
    assert _tokens(mixed) == _tokens(_per_preference(soup, prompts, preferences, config))
    assert [r.meta["steering"]["merge_weights"]["conciseness"] for r in mixed] == [0.8, 0.3, 0.8, 0.3, 1.0, 0.3, 0.8]


def test_each_mixed_row_equals_peft_merging_its_weights(soup, tiny, tiny_model_dir, adapter_dirs):
    peer = load_adapter(_base(tiny_model_dir), adapter_dirs["conciseness"], "c")
    load_adapter(peer, adapter_dirs["informativeness"], "i")
    mixed = soup.generate(PROMPTS, [A, B, B, A], GREEDY)
    for item, name in ((A, "peer_a"), (B, "peer_b")):
        peer.add_weighted_adapter(["c", "i"], list(item.vector(ADAPTERS)), name, combination_type="cat")
        peer.set_adapter(name)
        expected = generate(peer, tiny[1], PROMPTS, GREEDY)
        rows = [i for i, q in enumerate([A, B, B, A]) if q == item]
        assert [mixed[i].token_ids for i in rows] == [expected[i].token_ids for i in rows]


def test_a_soups_sweep_batched_across_the_grid_equals_point_by_point(soup, objectives):
    _sweeps_agree(lambda: soup, objectives, samples=1)


def test_soups_that_cannot_mix_per_row_group_rows_by_preference(tiny, tiny_model_dir, adapter_dirs, soup):
    averaged = SoupPolicy(_base(tiny_model_dir), tiny[1], adapter_dirs, mode="average_ab")
    assert not averaged.mixes_preferences and not batches_grid(averaged)
    answers = averaged.generate(PROMPTS, [A, B, A, B], GREEDY)
    assert _tokens(answers) == _tokens(_per_preference(averaged, PROMPTS, [A, B, A, B], GREEDY))


def test_a_mod_sweep_batched_across_the_grid_equals_point_by_point(tiny, tiny_model_dir, adapter_dirs, objectives):
    peft_model = load_adapters(_base(tiny_model_dir), adapter_dirs, ["m0", "m1"])
    mod = MODPolicy(peft_model, tiny[1], list(adapter_dirs), adapter_names=["m0", "m1"])
    prompts = PROMPTS + PROMPTS[:2]
    preferences = [A, B, A, B, A, B]
    assert _tokens(mod.generate(prompts, preferences, SAMPLED)) == _tokens(
        _per_preference(mod, prompts, preferences, SAMPLED))
    _sweeps_agree(lambda: mod, objectives, samples=1)


def test_mod_with_one_seed_group_draws_a_repeated_prompt_anew_under_each_weight(tiny, tiny_model_dir, adapter_dirs):
    """SIPO samples one prompt under several weights in one call and needs a distinct draw for each."""
    peft_model = load_adapters(_base(tiny_model_dir), adapter_dirs, ["m0", "m1"])
    mod = MODPolicy(peft_model, tiny[1], list(adapter_dirs), adapter_names=["m0", "m1"])
    prompts, equal = ["Explain the sky."] * 3, Preference.parse("conciseness=0.5,informativeness=0.5")
    per_preference = _tokens(mod.generate(prompts, equal, SAMPLED))
    one_group = _tokens(mod.generate(prompts, [equal] * 3, SAMPLED, seed_groups=[None] * 3))
    assert one_group == per_preference  # one preference: its group is the whole call
    by_weight = _tokens(mod.generate(prompts, [A, B, equal], SAMPLED))
    regrouped = _tokens(mod.generate(prompts, [A, B, equal], SAMPLED, seed_groups=[None] * 3))
    assert len(set(map(tuple, regrouped))) == 3 and by_weight != regrouped
