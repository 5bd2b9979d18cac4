"""Objective-labelled preference pairs on the tiny Llama: orientation, ties, seeds, system prompts."""

from __future__ import annotations

import logging

import pytest
import torch

from paretoalign.core.errors import ConfigError
from paretoalign.generation import GenerationConfig, generate, render_prompts
from paretoalign.methods.common.pairs import best_worst_pairs, margin_pairs, objective_pairs
from paretoalign.models import load_model
from paretoalign.objectives import Conciseness, Informativeness, count_words

PROMPTS = ["How do I cook rice?", "Why is the sky blue?", "Give me three tips.", "Explain photosynthesis.",
           "Write a short poem about the sea.", "Please summarize the following text."]
SAMPLING = GenerationConfig(max_new_tokens=12, temperature=1.5, seed=3)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("objective", [Conciseness(), Informativeness()], ids=lambda o: o.name)
def test_chosen_is_strictly_better_under_the_objective(tiny, objective):
    pairs = objective_pairs(*tiny, PROMPTS, objective, samples=4, config=SAMPLING)
    assert len(pairs) >= len(PROMPTS) - 2  # random samples of 12 tokens rarely have equal word counts
    for pair in pairs:
        chosen, rejected = count_words(pair.chosen), count_words(pair.rejected)
        assert objective.direction * (chosen - rejected) > 0
        assert pair.margin == abs(chosen - rejected)
        assert pair.objective == objective.name
        assert pair.prompt in PROMPTS


def test_best_against_worst_and_ties_skipped():
    candidates = [["one two three", "one", "one two"], ["same words", "other pair"], ["lonely"]]
    pairs, skipped = best_worst_pairs(["a", "b", "c"], candidates, Conciseness())
    assert skipped == 2  # "b": both have two words; "c": a single candidate
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [("a", "one", "one two three", 2.0)]
    assert pairs[0].meta == {"chosen_score": 1.0, "rejected_score": 3.0}


def test_min_margin_drops_narrow_best_worst_pairs():
    candidates = [["one two three four", "one"], ["one two", "one"], ["x y", "x y"]]
    pairs, skipped = best_worst_pairs(["a", "b", "c"], candidates, Conciseness(), min_margin=2)
    assert skipped == 2  # "b": gap 1 < 2; "c": tie
    assert [(p.prompt, p.chosen, p.margin) for p in pairs] == [("a", "one", 3.0)]


def test_margin_pairs_keep_every_wide_enough_pair_better_over_worse():
    candidates = [["one two three four", "one", "one two", "one two"], ["same", "also"]]
    pairs, skipped = margin_pairs(["a", "b"], candidates, Conciseness(), min_margin=1)
    assert skipped == 1  # "b": its two candidates tie
    expected = {("one", "one two three four"), ("one", "one two"), ("one two", "one two three four")}
    assert {(p.chosen, p.rejected) for p in pairs} == expected
    assert len(pairs) == 5  # the two "one two" candidates each pair with both others; they tie with each other
    assert all(count_words(p.rejected) - count_words(p.chosen) == p.margin >= 1 for p in pairs)


def test_all_pairing_samples_once_and_holds_the_best_worst_pair(tiny):
    config = GenerationConfig(max_new_tokens=12, temperature=1.5, seed=3)
    best_worst = objective_pairs(*tiny, PROMPTS, Informativeness(), samples=3, config=config)
    every = objective_pairs(*tiny, PROMPTS, Informativeness(), samples=3, config=config, pairing="all")
    assert len(every) > len(best_worst)
    assert all(pair in every for pair in best_worst)
    wide = objective_pairs(*tiny, PROMPTS, Informativeness(), samples=3, config=config, pairing="all", min_margin=3)
    assert [p for p in every if p.margin >= 3] == wide


def test_identical_greedy_samples_all_tie_and_are_logged(tiny, caplog):
    greedy = GenerationConfig(max_new_tokens=8, do_sample=False)
    with caplog.at_level(logging.INFO, logger="paretoalign.methods.common.pairs"):
        assert objective_pairs(*tiny, PROMPTS, Conciseness(), config=greedy) == []
    assert f"skipped {len(PROMPTS)} of {len(PROMPTS)}" in caplog.text


def test_same_seed_same_pairs_other_seed_other_pairs(tiny):
    first = objective_pairs(*tiny, PROMPTS, Informativeness(), config=SAMPLING)
    again = objective_pairs(*tiny, PROMPTS, Informativeness(), config=SAMPLING)
    other = objective_pairs(*tiny, PROMPTS, Informativeness(),
                            config=GenerationConfig(max_new_tokens=12, temperature=1.5, seed=4))
    assert [p.to_dict() for p in first] == [p.to_dict() for p in again]
    assert [p.to_dict() for p in first] != [p.to_dict() for p in other]


def test_one_system_prompt_per_sample_slot(tiny):
    model, tokenizer = tiny
    systems = ["Answer in one word.", "Answer at length with every detail."]
    pairs = objective_pairs(model, tokenizer, PROMPTS, Conciseness(), config=SAMPLING, system_prompt=systems)
    by_system = [generate(model, tokenizer, render_prompts(tokenizer, PROMPTS, system), SAMPLING, rendered=True)
                 for system in systems]
    expected = {prompt: {a.text, b.text} for prompt, a, b in zip(PROMPTS, *by_system)
                if count_words(a.text) != count_words(b.text)}
    assert len(pairs) == len(expected) > 0
    assert {p.prompt: {p.chosen, p.rejected} for p in pairs} == expected


def test_bad_arguments(tiny):
    with pytest.raises(ConfigError, match="samples must be >= 2"):
        objective_pairs(*tiny, PROMPTS, Conciseness(), samples=1)
    with pytest.raises(ConfigError, match="one per sample"):
        objective_pairs(*tiny, PROMPTS, Conciseness(), samples=3, system_prompt=["a", "b"])
    with pytest.raises(ConfigError, match="one list per prompt"):
        best_worst_pairs(["a", "b"], [["x", "y"]], Conciseness())
    with pytest.raises(ConfigError, match="pairing must be one of best_worst, all"):
        objective_pairs(*tiny, PROMPTS, Conciseness(), pairing="random")
