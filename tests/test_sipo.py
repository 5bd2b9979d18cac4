"""SIPO on tiny models: the combine and filter rules (hand-built cases; a rewrite better on one objective and worse
on another is dropped), the sampling lattice, the templates, deterministic conflict selection and splits, the
policies kept in objective order through every stage, DPO + NLL normalized by response tokens against the
first-round policy, and bad input stopping with one line and nothing half-written."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiny import make_tokenizer

from paretoalign.core.errors import ConfigError, DataError
from paretoalign.core.rundir import RunDirectory
from paretoalign.data import PreferencePair, ScoredResponse, read_jsonl
from paretoalign.data.prompts import split_of
from paretoalign.generation.chat import render_prompts
from paretoalign.methods import get_recipe
from paretoalign.methods.sipo import data as sipo_data
from paretoalign.methods.sipo import rules, stages
from paretoalign.methods.sipo.rewards import ImplicitRewards
from paretoalign.models.lora import attach_lora, save_adapter
from paretoalign.training.logprobs import IGNORE_INDEX
from paretoalign.training.sft import render_conversation, tokenize_completion

OBJECTIVES = "conciseness,simplicity"
NAMES = OBJECTIVES.split(",")
TINY = dict(prompts=8, samples=4, max_new_tokens=8, epochs=1, batch_size=2, lr=1e-3, max_length=160, review_tokens=6,
            conflict_prompts=0, realign_epochs=1, realign_lr=1e-3, steered=True, progress=False)
"""``steered``: the tiny random model's plain answers give its first round too little to disagree on for a
candidate to pass the filter; steered samples (the soups default) do."""
HELPSTEER = "tests/fixtures/datasets/helpsteer.jsonl"
PKU = "tests/fixtures/datasets/pku_saferlhf.jsonl"


def sipo_config(model_dir, **overrides):
    return get_recipe("sipo").config("quick", model=str(model_dir), **{**TINY, **overrides})


# ---------------------------------------------------------------------- rules (hand-built)


@pytest.mark.parametrize("sample, rewrite, kept", [
    ([0.5, 0.5], [0.9, 0.1], False),   # better on one objective, worse on the other: dropped
    ([0.5, 0.5], [0.1, 0.9], False),
    ([0.5, 0.5], [0.5, 0.5], False),   # no better anywhere
    ([0.5, 0.5], [0.5, 0.6], True),    # no worse anywhere, better on one
    ([0.5, 0.5], [0.7, 0.6], True),
    ([0.1, 0.2, 0.3], [0.1, 0.2, 0.29], False),
])
def test_combine_keeps_a_rewrite_only_when_no_worse_everywhere_and_better_somewhere(sample, rewrite, kept):
    assert rules.keep_rewrite(sample, rewrite) is kept


def test_filter_needs_both_answers_beaten_under_every_policy_and_keeps_one_per_prompt():
    chosen, rejected = [1.0, 0.0, 0.5], [0.0, 1.0, 0.5]
    assert rules.filter_margin([1.5, 1.2, 0.8], chosen, rejected) == pytest.approx(0.2)
    assert rules.filter_margin([2.0, 2.0, 0.4], chosen, rejected) < 0  # loses under the interpolation
    assert rules.filter_margin([0.9, 2.0, 2.0], chosen, rejected) < 0  # loses to chosen under policy 1
    assert rules.filter_margin([1.0, 2.0, 2.0], chosen, rejected) == 0  # a tie is not a win
    assert rules.best_survivor([0.0, -1.0]) is None
    assert rules.best_survivor([0.1, 0.3, -2.0, 0.3]) == 1  # widest margin, the first of equals
    with pytest.raises(ConfigError, match="one per policy"):
        rules.filter_margin([1.0], chosen, rejected)


def test_sampling_weights_are_the_interior_of_the_simplex_lattice():
    two = rules.sample_weights(["a", "b"], 5)
    assert [p.weight("a") for p in two] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert all(p.weight("a") + p.weight("b") == pytest.approx(1) for p in two)
    three = rules.sample_weights(["a", "b", "c"], 5)
    assert len(three) == 6 and all(min(p.vector("abc")) > 0 and sum(p.vector("abc")) == pytest.approx(1) for p in three)
    assert [p.vector("ab") for p in rules.sample_weights(["a", "b"], 2)] == [[0.5, 0.5]]
    with pytest.raises(ConfigError, match="sample_steps >= 3"):
        rules.sample_weights(["a", "b", "c"], 2)


def test_templates_name_the_objectives_and_must_have_their_placeholders(tiny_model_dir):
    from paretoalign.objectives import load_objectives

    text = rules.objectives_text(load_objectives(OBJECTIVES))
    assert text.splitlines() == ["- conciseness: brevity: number of words in the response, fewer is better",
                                 "- simplicity: readability of the response: Flesch reading ease, 0 (hard or empty) "
                                 "to 121 (very simple)"]
    config = sipo_config(tiny_model_dir)
    review = rules.fill(config.review_template, "Q?", "A.", text)
    assert "Q?" in review and "A." in review and text in review
    with pytest.raises(ConfigError, match=r"review_template lacks the placeholder \{objectives\}"):
        sipo_config(tiny_model_dir, review_template="Improve {response} to {prompt}")
    with pytest.raises(ConfigError, match=r"rewrite_template lacks the placeholder \{review\}"):
        sipo_config(tiny_model_dir, rewrite_template="{prompt} {response}")
    with pytest.raises(ConfigError, match=r"unknown placeholder \{answer\}"):
        sipo_config(tiny_model_dir, rewrite_template="{prompt} {response} {review} {answer}")
    with pytest.raises(ConfigError, match="not a format string"):
        sipo_config(tiny_model_dir, review_template="{prompt} {response} {objectives} {")
    custom = sipo_config(tiny_model_dir, rewrite_template="Fix {response} for {prompt} using {review}")
    assert rules.fill(custom.rewrite_template, "Q", "A", text, "R") == "Fix A for Q using R"


# ---------------------------------------------------------------------- conflicts and splits


def _scored_rows(count: int) -> list[ScoredResponse]:
    """Two answers per prompt that correctness and verbosity order differently (every third prompt: the same)."""
    rows = []
    for i in range(count):
        prompt = f"Question number {i}?"
        agree = i % 3 == 0
        rows += [ScoredResponse(prompt, f"short {i}", {"correctness": 4, "verbosity": 1 if not agree else 3}),
                 ScoredResponse(prompt, f"long answer {i}", {"correctness": 2 - i % 2, "verbosity": 2})]
    return rows


def test_conflicts_are_one_per_train_prompt_in_hash_order_whatever_the_input_order():
    rows = _scored_rows(40)
    found = sipo_data.dataset_conflicts(rows, ["correctness", "verbosity"])
    expected = {f"Question number {i}?" for i in range(40) if i % 3 and split_of(f"Question number {i}?") == "train"}
    assert {pair.prompt for pair in found} == expected and 0 < len(expected) < 27  # eval prompts held out
    assert all(pair.chosen.startswith("short") and pair.objective == "correctness" for pair in found)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    selected = rules.select_conflicts(found, 5)
    assert selected == rules.select_conflicts(sipo_data.dataset_conflicts(shuffled, ["correctness", "verbosity"]), 5)
    assert [p.prompt for p in selected] == [p.prompt for p in rules.select_conflicts(found)][:5]
    wide = PreferencePair(found[0].prompt, "a", "b", "correctness", margin=9.0)
    assert rules.select_conflicts([found[0], wide])[0] is wide  # per prompt, the widest margin


def test_dataset_pairs_per_label_through_the_adapters():
    helpsteer = sipo_data.read_dataset(f"helpsteer::{HELPSTEER}", seed=0)
    pairs = sipo_data.labelled_pairs(helpsteer, ["correctness", "verbosity"])
    # boiling point: 3 answers, correctness 4/2/2 (one tie), verbosity 1/3/2; primary color: 2 answers
    assert (len(pairs["correctness"]), len(pairs["verbosity"])) == (3, 4)
    conflicts = sipo_data.dataset_conflicts(helpsteer, ["correctness", "verbosity"])
    assert [(p.chosen, p.meta["conflicting_objectives"]) for p in conflicts] == [
        ("100 degrees Celsius.", ["verbosity"])] * 2
    pku = sipo_data.read_dataset(f"pku-saferlhf::{PKU}", seed=0)
    by_label = sipo_data.labelled_pairs(pku, ["helpfulness", "harmlessness"])
    assert len(by_label["helpfulness"]) == len(by_label["harmlessness"]) == 3  # the knives prompt is held out
    assert all(p.meta["chosen_is_safe"] for p in by_label["harmlessness"])
    conflicts = sipo_data.dataset_conflicts(pku, ["harmlessness", "helpfulness"])
    assert [p.prompt for p in conflicts] == ["How do I find someone's home address from their phone number?",
                                             "Write an insult for my coworker."]
    with pytest.raises(ConfigError, match="--labels helpfulness harmlessness"):
        sipo_data.labelled_pairs(pku, ["correctness", "verbosity"])
    with pytest.raises(DataError, match="no train-split pairs labelled 'coherence'"):
        sipo_data.labelled_pairs(_scored_rows(20), ["correctness", "coherence"])


def test_labels_must_match_the_objectives(tiny_model_dir):
    from paretoalign.objectives import load_objectives

    objectives = load_objectives(OBJECTIVES)
    assert sipo_data.dataset_labels(objectives, []) == NAMES
    with pytest.raises(ConfigError, match="2 objectives; give one label per objective"):
        sipo_data.dataset_labels(objectives, ["correctness"])
    with pytest.raises(ConfigError, match="give --dataset too"):
        sipo_config(tiny_model_dir, labels=["correctness", "verbosity"])


def test_a_dataset_run_trains_each_objective_on_its_label_and_mines_its_conflicts(tiny_model_dir, tmp_path):
    rows = [{"prompt": r.prompt, "response": r.response, "helpfulness": 2, "coherence": 2, "complexity": 2,
             **r.scores} for r in _scored_rows(24)]
    data = tmp_path / "helpsteer.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = sipo_config(tiny_model_dir, dataset=f"helpsteer::{data}", labels=["correctness", "verbosity"],
                         conflict_prompts=4)
    run = get_recipe("sipo").fit(OBJECTIVES, tmp_path / "run", config, until="conflicts")
    policies = run.manifest["policies"]
    assert [policies[name]["label"] for name in NAMES] == ["correctness", "verbosity"]
    train = [i for i in range(24) if split_of(f"Question number {i}?") == "train"]
    assert policies["conciseness"]["pairs"] == len(train)  # every train prompt's pair differs on correctness
    conflicts = read_jsonl(run.path / stages.CONFLICTS_FILE, PreferencePair)
    assert len(conflicts) == 4 and all(split_of(p.prompt) == "train" for p in conflicts)
    assert run.manifest["survivors"] == {"conflicting_prompts": 4}


# ---------------------------------------------------------------------- the policies in objective order


def _random_adapter(model_dir, folder, seed: int):
    """A LoRA adapter on the tiny model with random (non-zero) B, saved with the model's tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = attach_lora(model, r=4, alpha=8)
    torch.manual_seed(seed)
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.2)
    save_adapter(peft, "default", folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


def _response_logprob(model_dir, adapter, prompt: str, response: str) -> tuple[float, int]:
    """Σ log π(response tokens) and their count, by a plain teacher-forced forward (the oracle)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    prompt_text = render_prompts(tokenizer, [prompt])[0]
    ids, labels = tokenize_completion(tokenizer, prompt_text, render_conversation(tokenizer, prompt_text, prompt,
                                                                                  response, None))
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    targets, mask = torch.tensor(ids[1:]), torch.tensor(labels[1:]) != IGNORE_INDEX
    logps = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    return float(logps[mask].sum()), int(mask.sum())


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: _random_adapter(tiny_model_dir, root / name, seed) for seed, name in enumerate(NAMES)}


def test_implicit_rewards_follow_the_objective_order_not_the_folders_order(tiny_model_dir, adapters):
    reversed_folders = dict(reversed(adapters.items()))
    scorer = ImplicitRewards(reversed_folders, NAMES, str(tiny_model_dir), beta=0.1, device="cpu")
    assert scorer.objectives == NAMES
    prompt, response = "How do I cook rice?", "Rinse the rice and boil it."
    rewards = scorer([prompt], [response], [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    reference, _ = _response_logprob(tiny_model_dir, None, prompt, response)
    for row, name in enumerate(NAMES):
        policy, _ = _response_logprob(tiny_model_dir, adapters[name], prompt, response)
        assert rewards[row, 0] == pytest.approx(0.1 * (policy - reference), abs=1e-4)
    assert rewards[2, 0] not in (pytest.approx(rewards[0, 0], abs=1e-6), pytest.approx(rewards[1, 0], abs=1e-6))


def test_policies_with_another_tokenizer_are_refused(tiny_model_dir, adapters, tmp_path):
    other = shutil.copytree(adapters["simplicity"], tmp_path / "other")
    make_tokenizer(vocab_size=300).save_pretrained(other)
    with pytest.raises(ConfigError, match="tokenizer of 'simplicity'.*must share one tokenizer"):
        ImplicitRewards({"conciseness": adapters["conciseness"], "simplicity": other}, NAMES, str(tiny_model_dir),
                        beta=0.1, device="cpu")


def test_realign_is_dpo_plus_nll_per_response_token_from_and_against_the_first_round_policy(
        tiny_model_dir, adapters, tmp_path):
    config = sipo_config(tiny_model_dir, batch_size=2, device="cpu")
    pairs = [{"prompt": "Hi", "chosen": "Hello there, friend.", "rejected": "Go."},
             {"prompt": "Explain photosynthesis to a child in simple words.", "chosen": "Plants eat light.",
              "rejected": "It is a process."}]
    trainer = stages.realign_trainer(adapters["simplicity"], pairs, tmp_path / "out", config)
    assert (trainer.config.loss, trainer.config.beta, trainer.config.alpha) == ("dpo_nll", 0.1, 0.1)
    trainer.before_training()  # π_ref: the first-round policy's log-probabilities, stored before any step
    _, metrics = trainer.compute_loss(trainer.collate(trainer.train_examples))
    assert float(metrics["dpo_loss"]) == pytest.approx(math.log(2), abs=1e-5)  # π = π_ref at the start
    per_token = [(-logp / count) for logp, count in
                 (_response_logprob(tiny_model_dir, adapters["simplicity"], p["prompt"], p["chosen"]) for p in pairs)]
    assert float(metrics["chosen_nll"]) == pytest.approx(sum(per_token) / 2, rel=1e-4)
    padded = -sum(_response_logprob(tiny_model_dir, adapters["simplicity"], p["prompt"], p["chosen"])[0]
                  for p in pairs) / sum(len(row) for row in trainer.collate(trainer.train_examples)["input_ids"][:2])
    assert float(metrics["chosen_nll"]) != pytest.approx(padded, rel=1e-2)  # not over prompt + padding tokens


@pytest.fixture(scope="module")
def reordered_run(tiny_model_dir, tmp_path_factory):
    """A tiny SIPO run whose manifest lists the first-round policies in reverse objective order, re-aligned at a
    negligible rate (so each re-aligned policy still equals its first-round one)."""
    recipe, path = get_recipe("sipo"), tmp_path_factory.mktemp("sipo") / "run"
    config = sipo_config(tiny_model_dir, realign_lr=1e-12)
    run = recipe.fit(OBJECTIVES, path, config, until="first_align")
    run.manifest["policies"] = dict(reversed(run.manifest["policies"].items()))
    run.save_manifest()
    return recipe.fit(OBJECTIVES, path, config)


def test_every_stage_keeps_the_policies_in_objective_order(reordered_run, tiny_model_dir):
    run = reordered_run
    assert list(run.manifest["policies"]) == NAMES[::-1]
    config = get_recipe("sipo").settings(run)
    assert stages.first_round_policy(run, NAMES, config).objectives == NAMES
    row = read_jsonl(run.path / stages.COMBINED_FILE)[0]
    reference, _ = _response_logprob(tiny_model_dir, None, row["prompt"], row["candidate"])
    for name in NAMES:
        policy, _ = _response_logprob(tiny_model_dir, run.path / run.manifest["policies"][name]["adapter"],
                                      row["prompt"], row["candidate"])
        recorded = row["rewrite_rewards" if row["source"] == "rewrite" else "sample_rewards"][name]
        assert recorded == pytest.approx(0.1 * (policy - reference), abs=1e-4)
    for name in NAMES:
        realigned = load_file(run.path / run.manifest["realigned"][name]["adapter"] / "adapter_model.safetensors")
        for source in NAMES:
            first = load_file(run.path / run.manifest["policies"][source]["adapter"] / "adapter_model.safetensors")
            same = all(torch.allclose(realigned[key], first[key], atol=1e-6) for key in first)
            assert same is (source == name)
    policy = get_recipe("sipo").load(run.path, device="cpu", dtype="float32")
    assert policy.objectives == NAMES and policy.name == "sipo"


def test_the_run_counts_what_survives_each_stage(reordered_run):
    survivors = reordered_run.manifest["survivors"]
    assert list(survivors) == ["conflicting_prompts", "mod_samples", "reviews", "rewrites", "rewrites_kept",
                               "filtered_prompts", "realign_pairs"]
    assert survivors["mod_samples"] == 4 * survivors["conflicting_prompts"]  # four weights per prompt
    assert survivors["rewrites_kept"] <= survivors["rewrites"] <= survivors["reviews"] == survivors["mod_samples"]
    assert 0 < survivors["filtered_prompts"] <= survivors["conflicting_prompts"]
    assert survivors["realign_pairs"] == 2 * survivors["filtered_prompts"]
    combined = read_jsonl(reordered_run.path / stages.COMBINED_FILE)
    for row in combined:
        kept = rules.keep_rewrite(list(row["sample_rewards"].values()), list(row["rewrite_rewards"].values()))
        assert (row["source"] == "rewrite") == kept
    filtered = read_jsonl(reordered_run.path / stages.FILTERED_FILE)
    assert len({row["prompt"] for row in filtered}) == len(filtered) and all(row["margin"] > 0 for row in filtered)
    reviews = read_jsonl(reordered_run.path / stages.REVIEWS_FILE)
    assert all(set(row) == {"prompt", "weights", "response", "review"} for row in reviews)


# ---------------------------------------------------------------------- bad input


def test_fewer_than_two_objectives_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="SIPO needs at least two objectives"):
        get_recipe("sipo").fit("conciseness", tmp_path / "run", sipo_config(tiny_model_dir))


def test_no_conflicting_prompts_stops_before_training_with_nothing_half_written(tiny_model_dir, tmp_path):
    # both prefer the shorter answer (length_cost is 0 below its budget): they never disagree
    with pytest.raises(DataError, match="no conflicting prompts: conciseness, length_cost order no pair"):
        get_recipe("sipo").fit("conciseness,length_cost", tmp_path / "run", sipo_config(tiny_model_dir))
    run = RunDirectory.open(tmp_path / "run")
    assert not run.manifest.get("stages") and not (run.path / "policies").exists()
    assert not (run.path / stages.CONFLICTS_FILE).exists()


def test_policies_from_reuses_a_finished_run_on_the_same_base_and_its_samples(tiny_model_dir, tiny_model_dir_b,
                                                                               tmp_path):
    sampling = {key: TINY[key] for key in ("prompts", "samples", "max_new_tokens")}
    source = get_recipe("mod").fit(OBJECTIVES, tmp_path / "mod", get_recipe("mod").config(
        "quick", model=str(tiny_model_dir), epochs=1, batch_size=2, lr=1e-3, max_length=160, progress=False,
        **sampling))
    with pytest.raises(ConfigError, match="was fitted on .* this run uses"):
        get_recipe("sipo").fit(OBJECTIVES, tmp_path / "other", sipo_config(tiny_model_dir_b,
                                                                           policies_from=str(source.path)))
    run = get_recipe("sipo").fit(OBJECTIVES, tmp_path / "sipo", sipo_config(tiny_model_dir,
                                 policies_from=str(source.path)), until="first_align")
    assert run.manifest["stages"]["first_align"]["copied_from"] == str(source.path)
    assert run.manifest["base_samples"]["copied_from"] == str(source.path)
    assert run.manifest["base_samples"]["generated_tokens"] == 0
    assert run.manifest["stages"]["first_align"]["generated_tokens"] == source.compute["generated_tokens"]
    assert (run.path / "data/samples.jsonl").read_bytes() == (source.path / "data/samples.jsonl").read_bytes()
    for name in NAMES:
        copied = run.path / run.manifest["policies"][name]["adapter"] / "adapter_model.safetensors"
        original = source.path / source.manifest["policies"][name]["adapter"] / "adapter_model.safetensors"
        assert copied.read_bytes() == original.read_bytes()
