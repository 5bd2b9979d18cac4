"""The sweep on the tiny model with cheap, model-free objectives: fields, constraints, seeds, normalization."""

import numpy as np
import pytest

from paretoalign.core import ConfigError, Constraint
from paretoalign.evaluation import build_results, load_results, weight_grid, write_report, write_results
from paretoalign.evaluation.sweep import evaluate
from paretoalign.objectives.normalization import fit_reference_normalization
from paretoalign.generation import BasePolicy, GenerationConfig
from paretoalign.methods.best_of_n import BestOfNPolicy
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.objectives import count_words, load_objectives

PROMPTS = ["Explain the sky.", "How do I cook rice?", "Write a poem about the sea."]
CONFIG = GenerationConfig(max_new_tokens=8, temperature=1.0, batch_size=8, seed=11)
AXES = ["conciseness", "informativeness"]


@pytest.fixture(scope="module")
def objectives(tiny):
    scorers = load_objectives("conciseness,informativeness,length_cost")
    fit_reference_normalization(scorers, BasePolicy(*tiny), PROMPTS, CONFIG)
    return scorers


class SeedRecordingPrompting(PromptingPolicy):
    """The real prompting policy, noting the seed of every call."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.seeds = []

    def generate(self, prompts, preference, config):
        self.seeds.append(config.seed)
        return super().generate(prompts, preference, config)


def test_normalization_is_the_mean_and_std_of_the_base_answers(tiny, objectives):
    answers = [r.text for r in BasePolicy(*tiny).generate(PROMPTS, None, CONFIG)]  # same seed: same answers
    words = np.array([count_words(text) for text in answers], dtype=float)
    stats = {o.name: o.stats for o in objectives}
    assert stats["informativeness"].mean == pytest.approx(words.mean())
    assert stats["informativeness"].std == pytest.approx(max(words.std(), 1e-6))
    assert stats["conciseness"].count == 3 and "3 prompts" in stats["conciseness"].source


def test_each_point_measures_its_own_answers_with_every_field(tiny, objectives):
    grid = weight_grid(AXES, 3)
    budget = 4
    constraint = Constraint.parse(f"length_cost<={budget}")
    objectives[2].budget = 0  # length_cost = word count, so the constraint reads "at most 4 words"
    policy = SeedRecordingPrompting(*tiny)
    result = evaluate(policy, objectives, PROMPTS, grid, config=CONFIG, constraints=[constraint], progress=False)
    assert result.name == "prompting" and result.objectives == AXES and len(result.points) == 3
    assert policy.seeds == [11]  # prompting mixes preferences: one call for the whole grid
    stats = {o.name: o.stats for o in objectives}
    for preference, point in zip(grid, result.points):
        assert point.weights == preference.as_dict()
        assert [s["prompt"] for s in point.samples] == PROMPTS  # plain prompts, not the steered ones
        words = np.array([count_words(s["response"]) for s in point.samples], dtype=float)
        assert point.length == pytest.approx(words.mean())
        assert point.raw["informativeness"] == pytest.approx(words.mean())
        z = (words - stats["informativeness"].mean) / stats["informativeness"].std
        assert point.rewards["informativeness"] == pytest.approx(z.mean())
        assert point.rewards["conciseness"] == pytest.approx(-(words - stats["conciseness"].mean).mean()
                                                             / stats["conciseness"].std)
        assert point.stderr["informativeness"] == pytest.approx(z.std(ddof=1) / np.sqrt(3))
        summary = point.constraints[str(constraint)]
        assert summary["mean_cost"] == pytest.approx(words.mean())
        assert summary["satisfied_share"] == pytest.approx(np.mean(words <= budget))
        assert point.responses == 3 and point.tokens > 0 and point.seconds > 0
        assert point.length_tokens > 0 and np.isfinite(point.kl) and point.kl_stderr >= 0
    objectives[2].budget = 50


def test_samples_per_prompt_use_consecutive_seeds_at_every_point(tiny, objectives):
    policy = SeedRecordingPrompting(*tiny)
    result = evaluate(policy, objectives, PROMPTS[:1], weight_grid(AXES, 2), samples_per_prompt=3, config=CONFIG,
                      progress=False)
    assert policy.seeds == [11, 12, 13]  # one call per sample pass, serving every point
    assert all(p.responses == 3 and len(p.samples) == 1 for p in result.points)


def test_the_sweep_refuses_inputs_it_cannot_measure(tiny, objectives):
    grid = weight_grid(AXES, 2)
    policy = BasePolicy(*tiny)
    with pytest.raises(ConfigError, match="no scorer given for informativeness"):
        evaluate(policy, objectives[:1], PROMPTS, grid, progress=False)
    with pytest.raises(ConfigError, match="no scorer given for length_cost"):
        evaluate(policy, objectives[:2], PROMPTS, grid, constraints=[Constraint.parse("length_cost<=0")],
                 progress=False)
    with pytest.raises(ConfigError, match="grid is empty"):
        evaluate(policy, objectives, PROMPTS, [], progress=False)
    with pytest.raises(ConfigError, match="positive integer"):
        fit_reference_normalization(objectives, policy, PROMPTS, CONFIG, samples_per_prompt=-1)
    with pytest.raises(ConfigError, match="no prompts"):
        fit_reference_normalization(objectives, policy, [], CONFIG)


def test_three_baselines_end_to_end_to_results_and_report(tiny, objectives, tmp_path):
    grid = weight_grid(AXES, 2)
    policies = [BasePolicy(*tiny), PromptingPolicy(*tiny), BestOfNPolicy(*tiny, objectives[:2], n=2)]
    sweeps = [evaluate(p, objectives, PROMPTS[:2], grid, config=CONFIG, progress=False) for p in policies]
    results = build_results(sweeps)
    path = write_results(tmp_path, results)
    assert load_results(path) == results
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    for name in ("base", "prompting", "best_of_n"):
        assert f"<td>{name}</td>" in page
    assert page.count('src="data:image/png;base64,') == 2
    assert results["methods"]["best_of_n"]["uses_scorers_at_decode"] is True
    # best-of-2 pays for both candidates of each prompt once, when it draws them
    best = results["methods"]["best_of_n"]["points"][0]
    assert best["tokens"] > best["length_tokens"] * 2
    assert results["methods"]["best_of_n"]["cost"]["generated_tokens"] == best["tokens"]
