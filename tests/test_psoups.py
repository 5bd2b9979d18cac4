"""Personalized Soups on tiny models: dimensions, every stage resumable and skipped when done, the judge's order
randomization in annotation, P-MORL's reward of the response, the merge of dimensions as the soup mechanism, the
baselines as loadable policies, and the bad inputs of issue 13."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError, DataError, UnknownObjectiveError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig
from paretoalign.methods import get_recipe, load_run
from paretoalign.methods.common.soup import SoupPolicy
from paretoalign.methods.psoups import (
    PreferenceConditionedReward,
    annotate_rows,
    combinations,
    load_variant,
    parse_dimensions,
    split_steered,
    steer,
)
from paretoalign.objectives import get_objective
from paretoalign.objectives.judges import Judge, Reading

OBJECTIVES = "simplicity,conciseness"
DIMENSIONS = ["P1A,P2A"]
PROMPTS = ["Explain photosynthesis to a child.", "How do I cook rice?"]
GREEDY = GenerationConfig(max_new_tokens=6, do_sample=False, seed=0)
TINY = dict(dimensions=DIMENSIONS, prompts=4, max_new_tokens=8, epochs=1, batch_size=2, lr=1e-3, max_length=160,
            ppo_steps=1, lora_r=4, progress=False, device="cpu")


def tiny_config(model_dir, **overrides):
    return get_recipe("psoups").config("quick", model=str(model_dir), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tmp_path_factory):
    """A run with every stage doing its work: DPO policies, reward models, multitask SFT and P-MORL."""
    path = tmp_path_factory.mktemp("psoups") / "run"
    return get_recipe("psoups").fit(OBJECTIVES, path, tiny_config(tiny_model_dir, multitask=True, pmorl=True))


def _files(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


# --- dimensions -------------------------------------------------------------------------------------------


def test_dimensions_are_named_objective_or_user_defined():
    dims = parse_dimensions(["P1A,p3b", "conciseness", "pirate=Answer like a pirate, matey."], [])
    assert [(d.name, d.judged_by, d.axis) for d in dims] == [
        ("P1A", ("simplicity", 1), "P1"), ("P3B", ("friendliness", -1), "P3"),
        ("conciseness", ("conciseness", 1), "conciseness"), ("pirate", None, "pirate")]
    assert dims[3].text == "Answer like a pirate, matey."
    assert [d.name for d in parse_dimensions([], ["simplicity", "friendliness"])] == ["simplicity", "friendliness"]


def test_dimension_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match="unknown preference dimension 'P4A'; use P1A, P1B, P2A, P2B, P3A, P3B"):
        parse_dimensions(["P1A,P4A"], [])
    with pytest.raises(ConfigError, match="'P1A' appears twice"):
        parse_dimensions(["P1A,p1a"], [])
    with pytest.raises(ConfigError, match="'P1A' and 'simplicity' have the same preference text"):
        parse_dimensions(["P1A,simplicity"], [])
    with pytest.raises(ConfigError, match="not NAME=preference text"):
        parse_dimensions(["two words=text"], [])
    with pytest.raises(ConfigError, match="samples must be an even number"):
        tiny_config("unused", samples=3)


def test_combinations_take_one_dimension_per_axis():
    names = lambda dims: [[d.name for d in combo] for combo in combinations(dims)]  # noqa: E731
    assert names(parse_dimensions(["P1A,P2A,P3A"], [])) == [
        ["P1A"], ["P2A"], ["P3A"], ["P1A", "P2A"], ["P1A", "P3A"], ["P2A", "P3A"], ["P1A", "P2A", "P3A"]]
    opposite = names(parse_dimensions(["P1A,P1B,P2A"], []))
    assert len(opposite) == 5 and ["P1A", "P1B"] not in opposite


def test_win_rate_combinations_are_uniform_preferences_judged_on_their_dimensions():
    from paretoalign.methods.psoups import win_rate_combinations

    grid = win_rate_combinations(parse_dimensions(["P1A,P2A,P3A"], []))
    assert len(grid) == 7
    preference, criteria = grid[-1]
    assert preference.as_dict() == pytest.approx({"P1A": 1 / 3, "P2A": 1 / 3, "P3A": 1 / 3})
    assert [c.name for c in criteria] == ["P1A", "P2A", "P3A"] and criteria[0].text.startswith("Generate a response")


def test_steered_prompts_read_back():
    dims = parse_dimensions(["P1A,P2A,pirate=Answer like a pirate."], [])
    prompt = steer("Why is the sky blue?", [dims[2].text, dims[0].text])
    assert prompt.startswith("Why is the sky blue?\n\n")
    assert split_steered(prompt, dims) == ("Why is the sky blue?", [dims[2], dims[0]])
    assert split_steered("Why is the sky blue?", dims) == ("Why is the sky blue?", [])
    assert split_steered("Line one.\n\nLine two.", dims) == ("Line one.\n\nLine two.", [])


# --- stages -----------------------------------------------------------------------------------------------


def test_every_stage_ran_and_recorded_its_work(fitted):
    manifest = fitted.manifest
    assert list(manifest["stages"]) == ["rollouts", "annotate", "reward-models", "train", "multitask", "pmorl"]
    assert [d["name"] for d in manifest["dimensions"]] == ["P1A", "P2A"]
    for name in ("P1A", "P2A"):
        rollouts = [json.loads(line) for line in (fitted.path / manifest["rollouts"][name]["file"]).read_text().splitlines()]
        assert len(rollouts) == 4 and all(len(row["responses"]) == 2 for row in rollouts)
        assert all(row["prompt"] == steer(row["instruction"], [manifest["dimensions"][0 if name == "P1A" else 1]["text"]])
                   for row in rollouts)
        counts = manifest["annotations"][name]
        assert counts["pairs"] == counts["a"] + counts["b"] + counts["ties"] == 4
        assert manifest["reward_models"][name]["stats"]["count"] == 8
        assert (fitted.path / manifest["policies"][name]["adapter"] / "adapter_config.json").is_file()
    assert set(manifest["baselines"]) == {"multitask", "pmorl"}
    assert manifest["baselines"]["pmorl"]["combinations"] == 3


def test_annotations_keep_each_verdict_with_the_judges_prompt_and_answer(fitted):
    rows = [json.loads(line) for line in (fitted.path / "data/annotations/P1A.jsonl").read_text().splitlines()]
    for row in rows:
        verdict = row["verdict"]
        assert verdict["judge"] == "objectives" and verdict["prompt"].startswith("P1A: objective simplicity")
        first, second = (float(part.split("=")[1]) for part in verdict["raw"].split(": ")[1].split(" "))
        a, b = (second, first) if verdict["swapped"] else (first, second)
        assert verdict["verdict"] == ("tie" if a == b else "a" if a > b else "b")  # un-swapped by position


class FirstShown(Judge):
    """Always prefers the answer it is shown first."""

    name = "first-shown"

    def read(self, prompts, firsts, seconds, criterion):
        return [Reading("first", None, f"{criterion.name}: {first}", "first") for first in firsts]


def test_annotation_randomizes_the_order_and_unswaps_it():
    dimension = parse_dimensions(["P2A"], [])[0]
    rows = [{"instruction": f"Question {i}?", "prompt": steer(f"Question {i}?", [dimension.text]),
             "responses": [f"answer one {i}", f"answer two {i}", f"answer three {i}", f"answer four {i}"]}
            for i in range(12)]
    annotated = annotate_rows(FirstShown(seed=3), dimension, rows)
    assert len(annotated) == 24
    swaps = [row["verdict"]["swapped"] for row in annotated]
    assert any(swaps) and not all(swaps)
    for row in annotated:
        assert row["verdict"]["verdict"] == ("b" if row["verdict"]["swapped"] else "a")
        shown_first = row["response_b"] if row["verdict"]["swapped"] else row["response_a"]
        assert row["verdict"]["prompt"] == f"P2A: {shown_first}"


def test_a_second_fit_does_nothing_and_until_stops_after_a_stage(fitted, tiny_model_dir, tmp_path):
    before = _files(fitted.path)
    config = tiny_config(tiny_model_dir, multitask=True, pmorl=True)
    assert get_recipe("psoups").fit(OBJECTIVES, fitted.path, config).finished and _files(fitted.path) == before
    half = get_recipe("psoups").fit(OBJECTIVES, tmp_path / "half", tiny_config(tiny_model_dir), until="annotate")
    assert not half.finished and list(half.manifest["stages"]) == ["rollouts", "annotate"]


@pytest.mark.parametrize("stage, key, folder", [
    ("rollouts", "rollouts", "file"), ("annotate", "annotations", "file"), ("reward-models", "reward_models", "model"),
    ("train", "policies", "adapter")])
def test_each_stage_resumes_with_the_dimension_it_had_not_finished(fitted, tiny_model_dir, tmp_path, stage, key, folder):
    copy = shutil.copytree(fitted.path, tmp_path / "run")
    manifest = json.loads((copy / "manifest.json").read_text())
    stages = list(manifest["stages"])
    for later in stages[stages.index(stage):]:
        del manifest["stages"][later]
    redone = manifest[key].pop("P2A")
    manifest["status"] = "running"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    kept = copy / manifest[key]["P1A"][folder]
    kept_time = max(p.stat().st_mtime_ns for p in ([kept] if kept.is_file() else kept.rglob("*")))
    messages = []
    run = get_recipe("psoups").fit(OBJECTIVES, copy, tiny_config(tiny_model_dir, multitask=True, pmorl=True),
                                   log=messages.append)
    done = ", ".join(stages[:stages.index(stage)])
    assert run.finished and (not done or any(f"stages done: {done})" in m for m in messages))
    assert max(p.stat().st_mtime_ns for p in ([kept] if kept.is_file() else kept.rglob("*"))) == kept_time
    assert run.manifest[key]["P2A"][folder] == redone[folder]


def test_skipped_stages_say_why_and_train_nothing(tiny_model_dir, tmp_path):
    run = get_recipe("psoups").fit(OBJECTIVES, tmp_path / "run", tiny_config(tiny_model_dir))
    stages = run.manifest["stages"]
    assert "pmorl is off" in stages["reward-models"]["skipped"] and stages["multitask"]["skipped"] == "multitask is off"
    assert "reward_models" not in run.manifest and not (run.path / "reward_models").exists()
    with pytest.raises(ConfigError, match=r"trained no pmorl baseline \(pmorl was off\); refit with --pmorl"):
        load_variant(run.path, "pmorl", device="cpu", dtype="float32")


# --- P-MORL's reward ----------------------------------------------------------------------------------------


def _normalized(spec, mean=0.0, std=1.0):
    from paretoalign.objectives.base import NormStats

    objective = get_objective(spec)
    objective.stats = NormStats(mean, std, 1)
    return objective


def test_pmorl_reward_scores_the_response_under_each_asked_dimension():
    dims = parse_dimensions(["P1A,P2A"], [])
    rewards = {"P1A": _normalized("simplicity", 50, 10), "P2A": _normalized("conciseness", -20, 5)}
    reward = PreferenceConditionedReward(rewards, dims)
    prompt = steer("Why is the sky blue?", [dims[0].text, dims[1].text])
    short, long = "Air scatters blue light.", ("The sky appears blue because molecules in the atmosphere scatter the "
                                               "shorter blue wavelengths of sunlight much more strongly than red ones.")
    scores = reward.score([prompt, prompt], [short, long])
    assert scores[0] != scores[1]  # scoring the prompt alone would give one score to both answers
    for score, answer in zip(scores, (short, long)):
        expected = [rewards[d.name].reward([steer("Why is the sky blue?", [d.text])], [answer])[0] for d in dims]
        assert score == pytest.approx(sum(expected) / 2)
    only_p2a = reward.score([steer("Why is the sky blue?", [dims[1].text])], [short])[0]
    assert only_p2a == pytest.approx(rewards["P2A"].reward(["x"], [short])[0])
    with pytest.raises(DataError, match="carries no preference text of P1A, P2A"):
        reward.score(["Why is the sky blue?"], [short])


def test_pmorl_reward_of_the_trained_reward_models_tells_answers_apart(fitted):
    from paretoalign.methods.psoups.stages import pmorl_prompts, reward_objective, stored_dimensions

    dims = stored_dimensions(fitted)
    reward = PreferenceConditionedReward({d.name: reward_objective(fitted, d, "cpu") for d in dims}, dims)
    prompt = pmorl_prompts(["Why is the sky blue?"] * 3, dims)[2]
    assert [d.name for d in split_steered(prompt, dims)[1]] == ["P1A", "P2A"]
    first, second = reward.score([prompt, prompt], ["Blue light scatters.", "I do not know at all, sorry friend."])
    assert first != second


# --- policies -----------------------------------------------------------------------------------------------


def test_the_merge_of_dimensions_is_the_soup_mechanism(fitted, tiny_model_dir, tiny):
    from paretoalign.methods.common.objective_policies import policy_folders

    policy = load_run(fitted.path, device="cpu", dtype="float32")
    assert policy.objectives == ["P1A", "P2A"]
    preference = Preference.parse("P1A=0.3,P2A=0.7")
    ours = policy.generate(PROMPTS, preference, GREEDY)
    soup = SoupPolicy(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tiny[1], policy_folders(fitted))
    texts = [text for name, text in policy.texts.items()]
    theirs = soup.generate([steer(p, texts) for p in PROMPTS], Preference.parse("P1A=0.3,P2A=0.7"), GREEDY)
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]
    assert [r.prompt for r in ours] == PROMPTS
    ids = tiny[1](steer(PROMPTS[0], texts), return_tensors="pt").input_ids
    soup.merge(preference)  # the soup generates by per-row mixing; its merged model is the oracle here
    with torch.no_grad():
        merged, peer = policy.soup.model(ids).logits, soup.model(ids).logits
        base = tiny[0](ids).logits
    assert torch.allclose(merged, peer, atol=1e-6) and not torch.allclose(merged, base, atol=1e-4)
    assert ours[0].meta["steering"]["merge_weights"] == {"P1A": 0.3, "P2A": 0.7}
    only_p2a = policy.generate(PROMPTS[:1], Preference.parse("P2A=1"), GREEDY)[0]
    assert only_p2a.meta["steering"]["instructions"] == texts[1]


def test_baselines_load_as_policies_over_the_same_dimensions(fitted):
    preference = Preference.parse("P1A=0.5,P2A=0.5")
    for variant in ("prompting", "multitask", "pmorl"):
        policy = load_variant(fitted.path, variant, device="cpu", dtype="float32")
        assert policy.objectives == ["P1A", "P2A"] and policy.name == f"psoups-{variant}"
        responses = policy.generate(PROMPTS, preference, GREEDY)
        assert all(r.token_ids for r in responses) and responses[0].meta["steering"]["instructions"].count("Generate") == 2
    with pytest.raises(ConfigError, match="unknown psoups variant 'rlhf'"):
        load_variant(fitted.path, "rlhf")


def test_a_weight_on_a_dimension_without_a_policy_is_refused(fitted):
    policy = load_run(fitted.path, device="cpu", dtype="float32")
    with pytest.raises(UnknownObjectiveError, match="no policy for objective 'P3A'; it was trained for P1A, P2A"):
        policy.generate(PROMPTS, Preference.parse("P1A=0.5,P3A=0.5"), GREEDY)


# --- bad input ----------------------------------------------------------------------------------------------


def test_an_annotation_file_of_other_dimensions_is_refused(fitted, tiny_model_dir, tmp_path):
    rows = [line for name in ("P1A", "P2A") for line in (fitted.path / f"data/annotations/{name}.jsonl").read_text()
            .splitlines()]
    path = tmp_path / "annotations.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="is for dimensions P1A, P2A, not this run's P1A, P3A"):
        get_recipe("psoups").fit(OBJECTIVES, tmp_path / "other", tiny_config(tiny_model_dir, dimensions=["P1A,P3A"],
                                                                             annotations=str(path)))
    with pytest.raises(DataError, match="does not carry this run's text for P2A"):
        get_recipe("psoups").fit(OBJECTIVES, tmp_path / "texts", tiny_config(
            tiny_model_dir, dimensions=["P1A", "P2A=Be brief."], judge="local", annotations=str(path)))
    reused = get_recipe("psoups").fit(OBJECTIVES, tmp_path / "reused", tiny_config(tiny_model_dir, annotations=str(path)))
    assert reused.manifest["stages"]["rollouts"]["generated_tokens"] == 0
    assert reused.manifest["annotations"]["P1A"]["pairs"] == fitted.manifest["annotations"]["P1A"]["pairs"]


def test_free_text_dimensions_need_a_language_model_judge_before_any_rollout(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="cannot judge the free-text dimension\\(s\\) pirate; name each after an "
                                          "objective"):
        get_recipe("psoups").fit(OBJECTIVES, tmp_path / "run", tiny_config(
            tiny_model_dir, dimensions=["P1A", "pirate=Answer like a pirate."]))
    assert "rollouts" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_an_api_judge_without_its_key_fails_before_any_rollout(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("PSOUPS_TEST_KEY", raising=False)
    judge = "api:judge-model?base_url=http://127.0.0.1:9/v1&api_key_env=PSOUPS_TEST_KEY"
    with pytest.raises(ConfigError, match="environment variable PSOUPS_TEST_KEY holds no API key"):
        get_recipe("psoups").fit(OBJECTIVES, tmp_path / "run", tiny_config(tiny_model_dir, judge=judge))
    assert "rollouts" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_instructions_come_from_any_prompt_dataset(tmp_path):
    from paretoalign.methods.psoups.stages import instructions_from

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in (1, 2, 2, 3)))
    assert instructions_from(str(path), 10, seed=0) == ["Question 1?", "Question 2?", "Question 3?"]
    shipped = instructions_from("instructions", 5, seed=0)
    assert len(shipped) == 5 and len(set(shipped)) == 5
