"""RiC building blocks without a model: preference -> targets, clipping, frontier sampling, MORS, degenerate
samples, conditioning, settings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from paretoalign.core.errors import ConfigError, DataError, UnknownObjectiveError
from paretoalign.methods.ric import (
    MAPPINGS,
    Conditioning,
    ENCODINGS,
    RiCRecipe,
    clip_targets,
    fitted_range,
    is_degenerate,
    mors_mask,
    preference_to_targets,
    sample_frontier_targets,
)
from paretoalign.methods.ric.conditioning import level_of
from paretoalign.methods.ric.targets import DEFAULT_QUANTILE

RANGE_2 = {"a": (-1.0, 2.0), "b": (-2.0, 1.0)}
RANGE_3 = {"a": (0.0, 10.0), "b": (-1.0, 1.0), "c": (2.0, 4.0)}


def targets(preference, target_range=RANGE_2, mapping="ric"):
    return pytest.approx(preference_to_targets(preference, target_range, mapping))


# ---------------------------------------------------------------- preference -> targets


def test_ric_rule_two_objectives_by_hand():
    # largest weight -> max; the other: min + min(2 w, 1) (max - min)
    assert {"a": 2.0, "b": -0.2} == targets("a=0.7,b=0.3")
    assert {"a": 2.0, "b": 1.0} == targets("a=0.5,b=0.5")
    assert {"a": 2.0, "b": -2.0} == targets("a=1,b=0")
    assert {"a": -1.0, "b": 1.0} == targets("a=0,b=1")
    assert {"a": -0.4, "b": 1.0} == targets("a=0.1,b=0.9")


def test_ric_rule_three_objectives_by_hand():
    # N = 3: b gets min(0.9, 1) of its range, c min(0.6, 1)
    assert {"a": 10.0, "b": 0.8, "c": 3.2} == targets("a=0.5,b=0.3,c=0.2", RANGE_3)
    # tie for the largest weight: b (listed first) gets max, c gets min(1.2, 1) = max too; a 0.6 of its range
    assert {"a": 6.0, "b": 1.0, "c": 4.0} == targets("a=0.2,b=0.4,c=0.4", RANGE_3)
    assert {"a": 0.0, "b": -1.0, "c": 4.0} == targets("c=1", RANGE_3)


def test_l2_and_linear_rules_by_hand():
    assert {"a": -1 + 0.6 * 3, "b": -2 + 0.8 * 3} == targets({"a": 0.6 / 1.4, "b": 0.8 / 1.4}, mapping="l2")
    assert {"a": 2.0, "b": -2.0} == targets("a=1,b=0", mapping="l2")
    third = 1 / math.sqrt(3)
    equal = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert {"a": 10 * third, "b": -1 + 2 * third, "c": 2 + 2 * third} == targets(equal, RANGE_3, "l2")
    assert {"a": 1.1, "b": -1.1} == targets("a=0.7,b=0.3", mapping="linear")
    assert {"a": 5.0, "b": 0.0, "c": 2.0} == targets("a=0.5,b=0.5", RANGE_3, "linear")


def test_mapping_errors():
    with pytest.raises(UnknownObjectiveError, match="'z'"):
        preference_to_targets("z=1", RANGE_2)
    with pytest.raises(ConfigError, match="mapping 'cubic' is unknown; use one of ric, l2, linear"):
        preference_to_targets("a=1", RANGE_2, "cubic")


# ---------------------------------------------------------------- clipping


def test_clip_targets_clips_and_warns():
    with pytest.warns(UserWarning, match=r"clipped: a=5 -> 2 \(range -1.00..2.00\)"):
        clipped = clip_targets({"a": 5.0, "b": 0.5}, RANGE_2)
    assert clipped == {"a": 2.0, "b": 0.5}
    with pytest.warns(UserWarning, match="b=-3 -> -2"):
        assert clip_targets({"a": 0.0, "b": -3.0}, RANGE_2) == {"a": 0.0, "b": -2.0}


def test_clip_targets_inside_range_is_silent_and_checks_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clip_targets({"a": 2.0, "b": -2.0}, RANGE_2) == {"a": 2.0, "b": -2.0}
    with pytest.raises(ConfigError, match="missing b"):
        clip_targets({"a": 1.0}, RANGE_2)
    with pytest.raises(ConfigError, match="unknown z"):
        clip_targets({"a": 1.0, "b": 0.0, "z": 1.0}, RANGE_2)


# ---------------------------------------------------------------- frontier sampling


@pytest.mark.parametrize("target_range", [RANGE_2, RANGE_3])
def test_frontier_targets_in_range_with_all_but_the_lowest_at_max(target_range):
    rows = sample_frontier_targets(target_range, 500, np.random.default_rng(3))
    assert len(rows) == 500
    names = list(target_range)
    free_objectives = set()
    for row in rows:
        assert list(row) == names
        assert all(target_range[n][0] <= row[n] <= target_range[n][1] for n in names)
        below_max = [n for n in names if row[n] != target_range[n][1]]
        assert len(below_max) == 1
        free_objectives.add(below_max[0])
    assert free_objectives == set(names)  # every objective gets its turn to trade off


def test_frontier_free_target_is_uniform_lowest_of_draws():
    # the free objective is the lowest of N uniform draws (relative to its range): mean position 1/(N+1)
    rows = sample_frontier_targets(RANGE_3, 6000, np.random.default_rng(0))
    positions = [min((row[n] - lo) / (hi - lo) for n, (lo, hi) in RANGE_3.items()) for row in rows]
    assert np.mean(positions) == pytest.approx(1 / 4, abs=0.01)


def test_frontier_sampling_is_seeded():
    first = sample_frontier_targets(RANGE_2, 5, np.random.default_rng(7))
    assert first == sample_frontier_targets(RANGE_2, 5, np.random.default_rng(7))
    assert first != sample_frontier_targets(RANGE_2, 5, np.random.default_rng(8))


# ---------------------------------------------------------------- MORS


def test_mors_keeps_samples_with_any_objective_at_its_quantile():
    a = np.arange(10.0)  # 0.7-quantile 6.3 -> samples 7, 8, 9
    b = a[::-1].copy()   # 0.7-quantile 6.3 -> samples 0, 1, 2
    assert np.flatnonzero(mors_mask({"a": a, "b": b})).tolist() == [0, 1, 2, 7, 8, 9]
    assert mors_mask({"a": a, "b": b}, quantile=0.0).all()
    assert np.flatnonzero(mors_mask({"a": a, "b": b}, quantile=1.0)).tolist() == [0, 9]


def test_mors_drops_samples_below_every_threshold():
    rewards = {"x": [1.0, 5.0, 2.0, 2.0, 9.0], "y": [1.0, 0.0, 8.0, 2.0, 0.0]}
    # x quantile 0.7 = 4.2 (samples 1, 4); y quantile 0.7 = 1.6 (samples 2, 3)
    assert mors_mask(rewards).tolist() == [False, True, True, True, True]
    with pytest.raises(ConfigError, match="quantile must be in"):
        mors_mask(rewards, quantile=1.5)


def test_fitted_range_is_min_and_max():
    assert fitted_range({"a": [0.5, -1.0, 3.0], "b": np.array([2.0])}) == {"a": (-1.0, 3.0), "b": (2.0, 2.0)}
    with pytest.raises(ConfigError, match="no rewards for objective 'a'"):
        fitted_range({"a": []})


# ---------------------------------------------------------------- conditioning


def test_numeric_encoding_text():
    encoding = ENCODINGS["numeric"]
    assert encoding.encode({"simplicity": 0.5, "friendliness": -1.24}) == "<simplicity> 0.5 <friendliness> -1.2"
    assert encoding.encode({"a": -0.04, "b": 1.96}) == "<a> 0.0 <b> 2.0"
    assert encoding.decode("<simplicity> 0.5 <friendliness> -1.2") == {"simplicity": 0.5, "friendliness": -1.2}
    with pytest.raises(DataError, match="not RiC numeric targets"):
        encoding.decode("<simplicity> high")


def test_level_encoding_writes_the_band_of_each_target():
    encoding = ENCODINGS["levels"]
    assert encoding.encode({"simplicity": 1.0, "informativeness": -1.01}) == \
        "simplicity: very high; informativeness: very low"
    assert [level_of(value) for value in (-0.36, -0.35, 0.0, 0.34, 0.35, 0.99)] == \
        ["low", "medium", "medium", "medium", "high", "high"]
    assert encoding.decode("simplicity: high; informativeness: low") == {"simplicity": 0.65, "informativeness": -0.65}
    with pytest.raises(DataError, match="not RiC levels targets"):
        encoding.decode("<simplicity> 0.5")
    with pytest.raises(DataError, match="not RiC levels targets"):
        encoding.decode("simplicity: enormous")
    text = Conditioning(encoding="levels").condition("What is rain?", {"simplicity": 2.0, "informativeness": 0.1})
    assert text == "What is rain?\n\nsimplicity: very high; informativeness: medium"
    assert Conditioning(encoding="levels").split(text) == ("What is rain?", {"simplicity": 1.5, "informativeness": 0.0})


@pytest.mark.parametrize("position", ["suffix", "prefix"])
def test_conditioning_round_trip_and_position(position):
    conditioning = Conditioning(position=position)
    prompt = "Summarize:\n\nThe cat sat on the mat."
    text = conditioning.condition(prompt, {"simplicity": 1.26, "informativeness": -0.3})
    marker = "<simplicity> 1.3 <informativeness> -0.3"
    assert text.endswith("\n\n" + marker) if position == "suffix" else text.startswith(marker + "\n\n")
    assert conditioning.split(text) == (prompt, {"simplicity": 1.3, "informativeness": -0.3})


def test_conditioning_rejects_unknown_settings():
    with pytest.raises(ConfigError, match="position 'system' is unknown; use one of suffix, prefix"):
        Conditioning(position="system")
    with pytest.raises(ConfigError, match="encoding 'bins' is unknown"):
        Conditioning(encoding="bins")


# ---------------------------------------------------------------- degenerate samples


@pytest.mark.parametrize("text", ["", "   \n", "Well.....", "so so so so tired", "ha ha ha ha",
                                  "I'm sorry, I'm sorry, I'm sorry, I mean it", "the cat the cat the cat"])
def test_degenerate_samples(text):
    assert is_degenerate(text)


@pytest.mark.parametrize("text", ["Tokyo.", "Wait... what?", "It is very, very good.", "Rinse the rice, add water.",
                                  "The year 1000000 came and went.", "ha ha ha"])
def test_ordinary_answers_are_not_degenerate(text):
    assert not is_degenerate(text)


# ---------------------------------------------------------------- settings


def test_settings_name_the_rules_the_targets_module_implements():
    config = RiCRecipe.Config.__dataclass_fields__
    assert config["mapping"].metadata["choices"] == tuple(MAPPINGS)
    assert config["quantile"].default == DEFAULT_QUANTILE


def test_defaults_are_the_papers_and_presets_are_cpu_sized():
    recipe, paper = RiCRecipe(), RiCRecipe.Config()
    assert (paper.lora_r, paper.lora_alpha, paper.lr) == (64, 128, 1.4e-4)
    online = (paper.online_lr, paper.online_temperature, paper.online_top_p, paper.original_cap)
    assert online == (1e-5, 0.7, 0.9, 10000)
    quick, full = recipe.config("quick"), recipe.config("full")
    assert (quick.steps, quick.max_new_tokens, quick.online_iterations) == (12, 64, 0)
    assert (full.steps, full.max_new_tokens, full.online_iterations) == (300, 96, 1)
    assert recipe.stages == ("prepare", "train", "online") and recipe.needs_normalization(quick)
