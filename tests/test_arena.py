"""Pairwise evaluation: win/tie/loss counts and win rates by a judge, the Safe-RLHF arena's better/worse x
safe/unsafe counts, the win-rate table over preference combinations, and the JSON + PNG writer."""

from __future__ import annotations

import json

import pytest

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.evaluation.arena import (
    ArenaConfig,
    judge_answers,
    run_arena,
    safety_arena,
    win_rate_markdown,
    win_rate_table,
    write_arena,
)
from paretoalign.generation import BasePolicy, GenerationConfig
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.objectives import ObjectiveJudge

PROMPTS = ["Why is the sky blue?", "How do I cook rice?", "Name a fruit.", "What is rain?"]
SHORT = ["Scattering.", "Boil it.", "An apple.", "Falling water."]
LONG = ["Air scatters blue light more than red light.", "Rinse it, boil water, add it and simmer.",
        "An apple, which is sweet.", "Falling water."]
GENERATION = GenerationConfig(max_new_tokens=6, seed=0)


def test_judged_counts_and_win_rates_per_criterion():
    rates, verdicts = judge_answers(PROMPTS, SHORT, LONG, ["P2A", "P2B"], ObjectiveJudge())
    concise, informative = rates["P2A"], rates["P2B"]
    assert (concise["wins"], concise["ties"], concise["losses"], concise["count"]) == (3, 1, 0, 4)
    assert concise["rate"] == pytest.approx(3.5 / 4) and concise["low"] < concise["rate"] < concise["high"]
    assert (informative["wins"], informative["ties"], informative["losses"]) == (0, 1, 3)
    assert [v.verdict for v in verdicts["P2A"]] == ["a", "a", "a", "tie"]
    with pytest.raises(ConfigError, match="'P2A' is given twice"):
        judge_answers(PROMPTS, SHORT, LONG, ["P2A", "p2a"], ObjectiveJudge())


def test_safety_arena_counts_better_worse_by_reward_and_safe_unsafe_by_cost():
    # reward: conciseness (fewer words is better); cost: words over a budget of 2 (<= 0 is safe)
    pairs = [{} for _ in PROMPTS]
    safety = safety_arena(PROMPTS, SHORT, LONG, "conciseness", "length_cost?budget=2", pairs)
    # A (short) is better on the first three, tied on the last (a tie is "worse", as safe-rlhf counts it);
    # A is safe on all but none; B is safe only on the last two words answer.
    assert (safety["better_and_safe"], safety["better_but_unsafe"], safety["worse_but_safe"],
            safety["worse_and_unsafe"]) == (3, 0, 1, 0)
    assert safety["reward_ties"] == 1 and safety["safe_share_a"] == 1.0 and safety["safe_share_b"] == 0.25
    assert safety["transitions"]["b_unsafe_a_safe"] == {"count": 3, "a_win_rate": 1.0}
    assert safety["transitions"]["b_safe_a_safe"] == {"count": 1, "a_win_rate": 0.0}
    assert safety["transitions"]["b_safe_a_unsafe"] == {"count": 0, "a_win_rate": None}
    assert pairs[0] == {"reward_a": -1.0, "reward_b": -8.0, "cost_a": 0.0, "cost_b": 6.0}


@pytest.fixture(scope="module")
def policies(tiny):
    model, tokenizer = tiny
    return BasePolicy(model, tokenizer), PromptingPolicy(model, tokenizer)


def test_run_arena_on_two_policies_and_write_it(policies, tmp_path):
    base, prompting = policies
    config = ArenaConfig(generation=GENERATION, preference_b="conciseness=1", reward="conciseness",
                         cost="length_cost?budget=3")
    results = run_arena(base, prompting, PROMPTS, ["P2A", "simplicity"], ObjectiveJudge(), config)
    assert (results["policy_a"], results["policy_b"], results["prompts"]) == ("base", "prompting", 4)
    assert results["preference_b"] == {"conciseness": 1.0} and results["preference_a"] is None
    for key in ("P2A", "simplicity"):
        choices = [pair["verdicts"][key]["verdict"] for pair in results["pairs"]]
        rate = results["criteria"][key]
        assert (rate["wins"], rate["ties"], rate["losses"]) == (choices.count("a"), choices.count("tie"),
                                                                choices.count("b"))
    safety = results["safety"]
    better = sum(pair["reward_a"] > pair["reward_b"] for pair in results["pairs"])
    assert safety["better_and_safe"] + safety["better_but_unsafe"] == better
    assert sum(safety[key] for key in ("better_and_safe", "better_but_unsafe", "worse_but_safe",
                                       "worse_and_unsafe")) == 4
    paths = write_arena(results, tmp_path / "arena")
    assert json.loads(paths["json"].read_text())["criteria"] == results["criteria"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arena_refuses_what_it_cannot_compare(policies):
    base, prompting = policies
    judge = ObjectiveJudge()
    with pytest.raises(ConfigError, match="needs both a reward and a cost"):
        run_arena(base, prompting, PROMPTS, [], judge, ArenaConfig(reward="conciseness"))
    with pytest.raises(ConfigError, match="nothing to compare on"):
        run_arena(base, prompting, PROMPTS, [], judge)
    with pytest.raises(ConfigError, match="need a judge"):
        run_arena(base, prompting, PROMPTS, ["P2A"], None)
    with pytest.raises(ConfigError, match="at least one prompt"):
        run_arena(base, prompting, [], ["P2A"], judge)


def test_win_rate_table_per_combination_and_baseline(policies):
    base, prompting = policies
    combinations = [(Preference.parse("conciseness=1"), ["P2A"]),
                    (Preference.parse("conciseness=0.5,simplicity=0.5"), ["P2A", "P1A"])]
    table = win_rate_table(prompting, {"base": base, "prompting": prompting}, PROMPTS, combinations, ObjectiveJudge(),
                           GENERATION)
    assert [(row["preference"], row["baseline"]) for row in table["rows"]] == [
        ({"conciseness": 1.0}, "base"), ({"conciseness": 1.0}, "prompting"),
        ({"conciseness": 0.5, "simplicity": 0.5}, "base"), ({"conciseness": 0.5, "simplicity": 0.5}, "prompting")]
    second = table["rows"][2]
    assert second["overall"]["count"] == 8 and set(second["criteria"]) == {"P2A", "P1A"}
    itself = table["rows"][1]["overall"]  # the same answers on both sides: every pair a tie
    assert (itself["ties"], itself["rate"]) == (4, 0.5)
    markdown = win_rate_markdown(table).splitlines()
    assert markdown[0] == "| preference | vs base | vs prompting |"
    assert markdown[3].startswith("| conciseness + simplicity | ")
