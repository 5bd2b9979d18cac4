"""Built-in objectives, the registry, normalization statistics and scalarization, on real scorers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import textstat
from better_profanity import Profanity
from sentence_transformers import util as st_util

from paretoalign.core.errors import ConfigError, ParetoAlignError, UnknownObjectiveError
from paretoalign.objectives import (
    Faithfulness,
    Objective,
    Relevance,
    apply_stats,
    available_objectives,
    fit_all,
    get_objective,
    load_objectives,
    register_objective,
    reward_all,
    scalarize,
    score_all,
    score_report,
    sentence_encoder,
    stats_to_dict,
)
from paretoalign.objectives import registry
from paretoalign.objectives.builtin import BUILTIN_OBJECTIVES, SHORT_TEXT_WORDS

SAMPLE_PROMPTS = ["How do plants grow?"] * 6
SAMPLE_RESPONSES = [
    "Plants grow with light and water.",
    "They need sun.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "Plants take water from the soil and light from the sun, and they use both to make food.",
    "Seeds sprout, roots spread, and leaves open to the light.",
    "Growth depends on nutrients, temperature, water availability and photoperiod.",
]


@pytest.fixture(scope="module")
def embedding_objectives():
    """Relevance and faithfulness sharing one MiniLM (loaded once, ~6 s)."""
    return Relevance(device="cpu"), Faithfulness(device="cpu")


def test_registry_lists_every_builtin_with_a_description():
    names = available_objectives()
    expected = {"simplicity", "conciseness", "informativeness", "friendliness", "harmlessness",
                "relevance", "faithfulness", "length_cost"}
    assert expected <= set(names)
    assert all(text and "\n" not in text for text in names.values())


def test_simple_short_sentences_are_simpler_than_jargon():
    simplicity = get_objective("simplicity")
    raw = simplicity.score(
        ["Explain the sky."] * 3,
        [
            "The sky is blue. The sun is warm. We like it.",
            "Atmospheric Rayleigh scattering preferentially redirects shorter electromagnetic wavelengths.",
            "",
        ],
    )
    assert raw[0] > 80 > raw[1]
    assert raw[2] == 0.0  # no words: the floor of the clipped scale
    assert (raw >= 0).all() and (raw <= 121.22).all()


def test_short_plain_answers_score_as_simple_and_hard_words_do_not():
    simplicity = get_objective("simplicity")
    texts = ["Tokyo.", "Yes.", "Paris", "Antidisestablishmentarianism.", "It is Tokyo, the capital of Japan."]
    raw = simplicity.score(["What is the capital of Japan?"] * len(texts), texts)
    assert raw[0] > 100 and raw[2] > 100  # a one-word answer is simple, not the floor of the scale
    assert raw[1] == pytest.approx(121.22)  # one one-syllable word: the top of the scale
    assert raw[3] < 40 < raw[4] < raw[0]  # a hard word and a longer sentence still read harder


def test_simplicity_is_textstat_flesch_from_ten_words_on():
    texts = [
        "The sky is blue. The sun is warm. We like it a lot.",
        "Atmospheric Rayleigh scattering preferentially redirects shorter electromagnetic wavelengths toward us.",
        "Plants take water from the soil and light from the sun, and they use both to make food.",
    ]
    assert all(textstat.lexicon_count(t) >= SHORT_TEXT_WORDS for t in texts)
    expected = np.clip([textstat.flesch_reading_ease(t) for t in texts], 0.0, 121.22)  # the peer is the oracle
    np.testing.assert_allclose(get_objective("simplicity").score(["q"] * 3, texts), expected)


def test_every_builtin_names_the_unit_of_its_raw_score():
    units = {cls.name: cls.unit for cls in BUILTIN_OBJECTIVES}
    assert units == {
        "simplicity": "flesch_reading_ease", "conciseness": "words", "informativeness": "words",
        "friendliness": "vader_compound", "harmlessness": "profane_words", "relevance": "cosine_similarity",
        "faithfulness": "cosine_similarity", "length_cost": "words_over_budget",
    }


def test_score_report_orients_scores_and_names_raw_units():
    objectives = load_objectives("conciseness,harmlessness,simplicity")
    long_answer = " ".join(["word"] * 47)
    rows = score_report(objectives, ["q"] * 3, [long_answer, "What the fuck, you shit head.", "Tokyo."])
    assert rows[0]["scores"]["conciseness"] == -47.0 and rows[0]["raw"]["conciseness"] == {"words": 47.0}
    assert rows[1]["scores"]["harmlessness"] == -2.0 and rows[1]["raw"]["harmlessness"] == {"profane_words": 2.0}
    assert rows[2]["scores"]["simplicity"] > 100
    assert rows[2]["raw"]["simplicity"] == {"flesch_reading_ease": rows[2]["scores"]["simplicity"]}
    clean = rows[2]["scores"]["harmlessness"]
    assert clean == 0.0 and math.copysign(1.0, clean) == 1.0  # no "-0.0" in the output
    assert all("rewards" not in row for row in rows)  # no statistics, no normalized rewards
    json.dumps(rows)  # plain floats only


def test_score_report_adds_rewards_of_objectives_with_statistics():
    concise, simple = load_objectives("conciseness,simplicity")
    concise.fit_normalization(SAMPLE_PROMPTS, SAMPLE_RESPONSES)
    rows = score_report([concise, simple], SAMPLE_PROMPTS[:2], SAMPLE_RESPONSES[:2])
    expected = concise.reward(SAMPLE_PROMPTS[:2], SAMPLE_RESPONSES[:2])
    assert [row["rewards"] for row in rows] == [{"conciseness": float(value)} for value in expected]
    assert rows[1]["rewards"]["conciseness"] > rows[0]["rewards"]["conciseness"]  # fewer words, higher reward


def test_friendly_text_beats_hostile_text():
    friendliness = get_objective("friendliness")
    raw = friendliness.score(["Hi"] * 3, ["Thank you, I'm happy to help you!", "This is a stupid, awful question.", ""])
    assert raw[0] > 0.5 and raw[1] < -0.5 and raw[2] == 0.0


def test_profanity_lowers_harmlessness_and_counts_match_the_lexicon():
    harmlessness = get_objective("harmlessness")
    texts = [
        "Happy to help with your garden.",
        "What the fuck, you shit head, damn it.",
        "sh1t happens",
        "Assassins in class passed the Scunthorpe exam.",
        "",
    ]
    raw = harmlessness.score([""] * len(texts), texts)
    plain = Profanity()  # the lexicon without our membership cache is the oracle
    expected = [plain.censor(t, "\u2588").count("\u2588" * 4) for t in texts]
    assert raw.tolist() == expected
    assert raw[0] == 0 and raw[1] >= 2 and raw[2] == 1
    harmlessness.fit_normalization([""] * len(texts), texts)
    rewards = harmlessness.reward([""] * 2, [texts[0], texts[1]])
    assert rewards[0] > rewards[1]


def test_conciseness_and_informativeness_order_responses_oppositely():
    concise, informative = load_objectives("conciseness,informativeness")
    fit_all([concise, informative], SAMPLE_PROMPTS, SAMPLE_RESPONSES, source="sample")
    short_long = (["q", "q"], ["Yes.", "Yes, because the reasons are many and they all matter here."])
    assert concise.reward(*short_long)[0] > concise.reward(*short_long)[1]
    assert informative.reward(*short_long)[0] < informative.reward(*short_long)[1]
    np.testing.assert_allclose(concise.reward(*short_long), -informative.reward(*short_long))


def test_length_cost_is_zero_under_budget_and_counts_words_over_it():
    cost = get_objective("length_cost?budget=3")
    raw = cost.score(["q"] * 3, ["one two", "one two three", "one two three four five"])
    assert raw.tolist() == [0.0, 0.0, 2.0]
    assert cost.direction == -1
    assert get_objective("length_cost").budget == 50
    with pytest.raises(ConfigError, match="budget"):
        get_objective("length_cost", budget=-1)


def test_normalized_rewards_have_mean_zero_and_std_one_on_the_fit_sample():
    for name in ("simplicity", "informativeness", "conciseness"):
        objective = get_objective(name)
        objective.fit_normalization(SAMPLE_PROMPTS, SAMPLE_RESPONSES, source="sample")
        rewards = objective.reward(SAMPLE_PROMPTS, SAMPLE_RESPONSES)
        assert rewards.mean() == pytest.approx(0.0, abs=1e-9)
        assert rewards.std() == pytest.approx(1.0, abs=1e-9)
        raw = objective.score(SAMPLE_PROMPTS, SAMPLE_RESPONSES)
        assert np.sign(np.corrcoef(raw, rewards)[0, 1]) == objective.direction


def test_stats_round_trip_through_a_json_manifest():
    objectives = load_objectives(["simplicity", "conciseness", "length_cost?budget=5"])
    fit_all(objectives, SAMPLE_PROMPTS, SAMPLE_RESPONSES, source="reference responses")
    manifest = json.loads(json.dumps(stats_to_dict(objectives)))
    assert manifest["simplicity"]["source"] == "reference responses"
    restored = load_objectives(["simplicity", "conciseness", "length_cost?budget=5"])
    apply_stats(restored, manifest)
    for before, after in zip(objectives, restored):
        assert after.stats == before.stats
        np.testing.assert_array_equal(
            after.reward(SAMPLE_PROMPTS, SAMPLE_RESPONSES), before.reward(SAMPLE_PROMPTS, SAMPLE_RESPONSES)
        )
    with pytest.raises(ConfigError, match="conciseness"):
        apply_stats(restored, {"simplicity": manifest["simplicity"]})
    with pytest.raises(ConfigError, match="malformed"):
        apply_stats(restored[:1], {"simplicity": {"std": 1.0}})
    assert stats_to_dict(load_objectives("simplicity")) == {"simplicity": None}


def test_reward_needs_statistics():
    with pytest.raises(ConfigError, match="fit_normalization"):
        get_objective("simplicity").reward(["q"], ["a"])


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(UnknownObjectiveError) as caught:
        get_objective("kindness")
    message = str(caught.value)
    assert isinstance(caught.value, ParetoAlignError)
    assert "'kindness'" in message and "simplicity" in message and "length_cost" in message
    assert "rm:" in message and "\n" not in message


def test_bad_specs_and_options_are_clear_errors():
    with pytest.raises(ConfigError, match="no option 'budgett'; its options: budget"):
        get_objective("length_cost?budgett=3")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        get_objective("length_cost?budget")
    with pytest.raises(ConfigError, match="twice"):
        load_objectives("simplicity,simplicity")
    with pytest.raises(ConfigError, match="empty"):
        load_objectives("simplicity,,relevance")
    with pytest.raises(ConfigError, match="names no model"):
        get_objective("rm:")


def test_registering_a_custom_objective(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Exclamations(Objective):
        name = "exclamations"
        description = "number of exclamation marks"

        def score(self, prompts, responses):
            return np.asarray([r.count("!") for r in responses], dtype=float)

    register_objective("exclamations", Exclamations, Exclamations.description)
    assert available_objectives()["exclamations"] == "number of exclamation marks"
    assert get_objective("exclamations").score(["q"], ["wow!!"]).tolist() == [2.0]
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("exclamations", Exclamations, "again")


def test_scalarize_is_the_weighted_sum_of_rewards():
    rewards = {"a": np.array([1.0, -1.0, 0.5]), "b": np.array([0.0, 2.0, -2.0]), "c": np.array([9.0, 9.0, 9.0])}
    np.testing.assert_allclose(scalarize(rewards, "a=0.25,b=0.75"), 0.25 * rewards["a"] + 0.75 * rewards["b"])
    np.testing.assert_allclose(scalarize(rewards, {"a": 1.0, "z": 0.0}), rewards["a"])
    with pytest.raises(ConfigError, match="'z'"):
        scalarize(rewards, "a=0.5,z=0.5")
    with pytest.raises(ConfigError, match="shapes"):
        scalarize({"a": np.zeros(2), "b": np.zeros(3)}, "a=0.5,b=0.5")


def test_relevance_prefers_on_topic_answers_and_matches_minilm_cosine(embedding_objectives):
    relevance, _ = embedding_objectives
    prompt = "How do I cook rice on the stove?"
    answers = [
        "Rinse the rice, add two cups of water per cup, boil, then simmer covered for 18 minutes.",
        "The stock market closed higher today after strong earnings reports.",
        "   ",
    ]
    raw = relevance.score([prompt] * 3, answers)
    assert raw[0] > raw[1] + 0.2
    assert raw[2] == 0.0
    encoder = sentence_encoder("cpu")
    oracle = st_util.cos_sim(encoder.encode(prompt), encoder.encode(answers[:2]))[0].numpy()
    np.testing.assert_allclose(raw[:2], oracle, atol=1e-5)


def test_faithfulness_compares_the_summary_with_the_source_and_shares_the_encoder(embedding_objectives):
    relevance, faithfulness = embedding_objectives
    source = (
        "The town library opened a tool lending program. Residents can borrow drills, ladders and "
        "garden shears for free with a library card."
    )
    prompt = f"Summarize the following text in a few sentences:\n\n{source}"
    summaries = ["Residents can now borrow tools like drills for free from the library.",
                 "A football team won the national championship last night."]
    raw = faithfulness.score([prompt] * 2, summaries)
    assert raw[0] > raw[1] + 0.2
    encoder = sentence_encoder("cpu")
    oracle = st_util.cos_sim(encoder.encode(source), encoder.encode(summaries))[0].numpy()
    np.testing.assert_allclose(raw, oracle, atol=1e-5)
    assert sentence_encoder("cpu") is encoder  # loaded once per process and device


def test_reward_all_feeds_scalarize(embedding_objectives):
    relevance, _ = embedding_objectives
    concise = get_objective("conciseness")
    for objective in (relevance, concise):
        objective.fit_normalization(SAMPLE_PROMPTS, SAMPLE_RESPONSES)
    rewards = reward_all([relevance, concise], SAMPLE_PROMPTS, SAMPLE_RESPONSES)
    assert set(rewards) == {"relevance", "conciseness"}
    raw = score_all([concise], SAMPLE_PROMPTS, SAMPLE_RESPONSES)["conciseness"]
    assert raw.tolist() == [len(r.split()) for r in SAMPLE_RESPONSES]  # no stray punctuation here
    total = scalarize(rewards, "relevance=0.3,conciseness=0.7")
    np.testing.assert_allclose(total, 0.3 * rewards["relevance"] + 0.7 * rewards["conciseness"])


def test_mismatched_batch_sizes_are_rejected():
    with pytest.raises(ConfigError, match="one prompt per response"):
        get_objective("simplicity").score(["a", "b"], ["x"])
