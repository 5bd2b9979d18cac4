"""RiC stages on the tiny real Llama: prepare, offline SFT, RiCPolicy, online iteration, CLI, train_for_demo."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.core.rundir import RunDirectory
from paretoalign.data import ScoredResponse, read_jsonl
from paretoalign.generation import GenerationConfig
from paretoalign.interfaces.cli import main as cli
from paretoalign.methods.prompting import INSTRUCTIONS
from paretoalign.methods.ric import RiCConfig, load_policy, mors_mask, prepare, train_for_demo, train_offline, train_online
from paretoalign.methods.ric.recipe import OFFLINE_DATA, conditioned_prompt_transform, rewards_of, run_objectives, steered_messages
from paretoalign.objectives import count_words, load_objectives
from paretoalign.training import SFTConfig, SFTTrainer
from paretoalign.training.logprobs import IGNORE_INDEX

PROMPTS = ["Explain rain to a child.", "Give me three tips for sleep.", "What is a poem?", "How do I cook rice?"]
PAIRS = [
    {"prompt": "What is the sky?", "chosen": "The sky is blue.", "rejected": "The sky is the air above us all day."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hello there, my friend."},
    {"prompt": "Name a fruit.", "chosen": "An apple is a fruit that grows on trees.", "rejected": "Pear."},
]
GENERATION = GenerationConfig(max_new_tokens=8, seed=3)


def write_lines(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_config(model_dir, dataset, **overrides) -> RiCConfig:
    values = dict(model=str(model_dir), dataset=[str(dataset)], samples_per_prompt=2, max_new_tokens=8, steps=3,
                  batch_size=4, max_length=96, save_every=0, lora_r=4, lora_alpha=8, lr=5e-2, online_samples=8,
                  online_steps=2, device="cpu", progress=False)
    return RiCConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("ric-data") / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, prompts_file):
    """A run prepared from sampled tiny-model responses and trained offline: (run, in-memory policy)."""
    from paretoalign.methods.ric.recipe import policy_from
    from paretoalign.models import load_model

    out = tmp_path_factory.mktemp("ric") / "run"
    config = tiny_config(tiny_model_dir, prompts_file)
    model, tokenizer = load_model(config.model, dtype="float32", device="cpu")
    run = prepare(load_objectives("simplicity,informativeness"), out, config, model=model, tokenizer=tokenizer)
    model = train_offline(run, model=model, tokenizer=tokenizer)
    return run, policy_from(run, model, tokenizer)


def copy_run(run, tmp_path) -> RunDirectory:
    shutil.copytree(run.path, tmp_path / "copy")
    return RunDirectory.open(tmp_path / "copy")


# ---------------------------------------------------------------- prepare


def test_prepare_scores_both_sides_of_pairs_with_train_statistics(tmp_path):
    data = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    objectives = load_objectives("informativeness,conciseness")
    run = prepare(objectives, tmp_path / "run", RiCConfig(dataset=[str(data)], progress=False))
    records = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    texts = [text for pair in PAIRS for text in (pair["chosen"], pair["rejected"])]
    assert [r.response for r in records] == texts
    words = np.array([count_words(text) for text in texts], dtype=float)
    z = (words - words.mean()) / words.std()
    assert [r.meta["rewards"]["informativeness"] for r in records] == pytest.approx(z)
    assert [r.meta["rewards"]["conciseness"] for r in records] == pytest.approx(-z)  # fewer words is better
    assert [r.scores["conciseness"] for r in records] == words.tolist()
    stats = run.manifest["normalization"]["informativeness"]
    assert (stats["mean"], stats["std"], stats["count"]) == (pytest.approx(words.mean()), pytest.approx(words.std()), 6)
    assert run.manifest["target_range"] == {"informativeness": [pytest.approx(z.min()), pytest.approx(z.max())],
                                            "conciseness": [pytest.approx(-z.max()), pytest.approx(-z.min())]}
    assert run.manifest["stages"]["prepare"]["generated_tokens"] == 0


def test_prepare_keeps_statistics_the_objectives_carry(tmp_path):
    data = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    objectives = load_objectives("informativeness")
    objectives[0].fit_normalization(["p"] * 2, ["one two three", "one"])  # mean 2 words, std 1
    run = prepare(objectives, tmp_path / "run", RiCConfig(dataset=[str(data)], progress=False))
    assert run.manifest["normalization"]["informativeness"]["mean"] == 2.0
    first = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)[0]
    assert first.meta["rewards"]["informativeness"] == count_words(PAIRS[0]["chosen"]) - 2.0


def test_steered_messages_cycle_plain_and_objective_instructions():
    objectives = load_objectives("simplicity,informativeness")
    messages = steered_messages(["Q1", "Q2"], objectives, 3)
    assert messages[:3] == ["Q1", "Q1\n\nMost importantly: " + INSTRUCTIONS["simplicity"],
                            "Q1\n\nMost importantly: " + INSTRUCTIONS["informativeness"]]
    assert messages[3] == "Q2"


def test_prepare_samples_the_base_model_on_prompts(trained):
    run, _ = trained
    records = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    assert [r.prompt for r in records] == [p for p in PROMPTS for _ in range(2)]  # plain prompts, 2 samples each
    stage = run.manifest["stages"]["prepare"]
    assert stage["sampled_prompts"] == 4 and 0 < stage["generated_tokens"] <= 8 * 8
    rewards = rewards_of(records, ["simplicity", "informativeness"])
    assert run.manifest["target_range"]["simplicity"] == [pytest.approx(rewards["simplicity"].min()),
                                                          pytest.approx(rewards["simplicity"].max())]


# ---------------------------------------------------------------- offline SFT and the policy


def test_sft_sees_targets_in_the_prompt_and_learns_only_the_response(tiny, tmp_path):
    model, tokenizer = tiny
    record = ScoredResponse(prompt="What is rain?", response="Water from clouds.", scores={},
                            meta={"rewards": {"informativeness": -1.24, "simplicity": 0.5}})
    from paretoalign.methods.ric import Conditioning

    transform = conditioned_prompt_transform(Conditioning(), ["simplicity", "informativeness"])
    trainer = SFTTrainer(SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, progress=False), [record],
                         model=model, tokenizer=tokenizer, prompt_transform=transform)
    example = trainer.train_examples[0]
    prompt_ids = [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]
    learned = [label for label in example["labels"] if label != IGNORE_INDEX]
    assert "What is rain?\n\n<simplicity> 0.5 <informativeness> -1.2" in tokenizer.decode(prompt_ids)
    assert tokenizer.decode(learned).startswith("Water from clouds.")


def test_policy_conditions_each_preference_on_its_own_targets(trained):
    run, policy = trained
    simple, informative = Preference.parse("simplicity=1,informativeness=0"), Preference.parse("simplicity=0,informativeness=1")
    first = policy.generate(PROMPTS, simple, GENERATION)
    second = policy.generate(PROMPTS, informative, GENERATION)
    low_s, high_s = run.manifest["target_range"]["simplicity"]
    low_i, high_i = run.manifest["target_range"]["informativeness"]
    assert first[0].meta["targets"] == {"simplicity": high_s, "informativeness": low_i}
    assert second[0].meta["targets"] == {"simplicity": low_s, "informativeness": high_i}
    assert [r.prompt for r in first] == PROMPTS  # objectives and π_ref see the plain prompt
    assert [r.text for r in first] != [r.text for r in second]
    assert [r.text for r in first] == [r.text for r in policy.generate(PROMPTS, simple, GENERATION)]
    with pytest.raises(ConfigError, match="RiC needs a preference"):
        policy.generate(PROMPTS, None, GENERATION)


def test_reference_is_the_base_model_with_adapters_off(trained, tiny_model_dir):
    _, policy = trained
    reference, tokenizer = policy.reference()
    ids = tokenizer(["The sky is blue"], return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        assert torch.allclose(reference(input_ids=ids).logits, expected, atol=1e-5)
        assert not torch.allclose(policy.model(input_ids=ids).logits, expected, atol=1e-3)


def test_targets_outside_the_range_are_clipped_with_a_warning(trained):
    _, policy = trained
    high = {name: hi + 5 for name, (_, hi) in policy.target_range.items()}
    with pytest.warns(UserWarning, match="outside the fitted range were clipped"):
        responses = policy.generate_for_targets(PROMPTS[:1], [high], GENERATION)
    assert responses[0].meta["targets"] == {name: hi for name, (_, hi) in policy.target_range.items()}


def test_saved_adapter_reloads_as_the_same_policy(trained):
    run, policy = trained
    loaded = load_policy(run.path, device="cpu")
    preference = Preference.parse("simplicity=0.3,informativeness=0.7")
    assert [r.text for r in loaded.generate(PROMPTS, preference, GENERATION)] == [
        r.text for r in policy.generate(PROMPTS, preference, GENERATION)]
    assert loaded.training_cost["trained_tokens"] == run.manifest["stages"]["offline"]["trained_tokens"] > 0


# ---------------------------------------------------------------- online iterations


def test_online_iteration_relabels_filters_and_trains(trained, tmp_path):
    run = copy_run(trained[0], tmp_path)
    train_online(run, 1)
    stage = run.manifest["stages"]["online"][0]
    online = read_jsonl(run.path / "data" / "online-1.jsonl", ScoredResponse)
    original = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    names = run.manifest["objectives"]
    assert stage["sampled"] == 8 and 1 <= stage["kept"] == len(online) <= 8
    assert stage["original_kept"] == int(mors_mask(rewards_of(original, names)).sum())
    assert stage["examples"] == stage["original_kept"] + stage["kept"] and stage["steps"] == 2
    objectives = run_objectives(run)
    for objective in objectives:  # relabelled with the rewards actually obtained
        obtained = objective.reward([r.prompt for r in online], [r.response for r in online])
        assert [r.meta["rewards"][objective.name] for r in online] == pytest.approx(obtained)
    every = [run.manifest["stages"]["prepare"], run.manifest["stages"]["offline"], stage]
    assert run.manifest["compute"]["generated_tokens"] == sum(s["generated_tokens"] for s in every if "generated_tokens" in s)
    assert run.manifest["compute"]["trained_tokens"] == sum(s.get("trained_tokens", 0) for s in every)
    assert run.manifest["artifacts"]["adapter"]["path"] == "online-1/model"
    train_online(run, 1)  # already there: nothing more
    assert len(run.manifest["stages"]["online"]) == 1


# ---------------------------------------------------------------- command line


def test_cli_stages_and_resume(tiny_model_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--no-progress", "--device", "cpu"]
    assert cli(["ric", "prepare", "--objectives", "simplicity,informativeness", "--out", str(out), "--model",
                str(tiny_model_dir), "--dataset", str(prompts_file), "--samples-per-prompt", "2",
                "--max-new-tokens", "8", *common]) == 0
    assert "prepared 8 scored responses" in capsys.readouterr().out
    train = ["ric", "train", str(out), "--batch-size", "4", "--max-length", "96", "--lora-r", "4", "--save-every", "2", *common]
    assert cli([*train, "--steps", "2"]) == 0
    assert cli(train) == 2
    assert "already has a trained offline stage" in capsys.readouterr().err
    assert cli([*train, "--steps", "4", "--resume"]) == 0  # continues from the step-2 checkpoint
    steps = [json.loads(line)["step"] for line in (out / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert RunDirectory.open(out).manifest["stages"]["offline"]["steps"] == 4
    assert cli(["ric", "online", str(out), "--iterations", "1", "--online-samples", "4", "--online-steps", "1", *common]) == 0
    assert "online iteration 1: kept" in capsys.readouterr().out


def test_cli_run_does_every_stage_in_one_process(tiny_model_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["ric", "run", "--objectives", "simplicity,informativeness", "--out", str(out), "--model",
                str(tiny_model_dir), "--dataset", str(prompts_file), "--samples-per-prompt", "2", "--max-new-tokens", "8",
                "--steps", "2", "--batch-size", "4", "--lora-r", "4", "--online-samples", "4", "--online-steps", "1",
                "--iterations", "1", "--no-progress", "--device", "cpu"]) == 0
    assert "RiC run finished" in capsys.readouterr().out
    manifest = RunDirectory.open(out).manifest
    assert manifest["finished"] and [s["steps"] for s in manifest["stages"]["online"]] == [1]
    assert manifest["artifacts"]["adapter"]["path"] == "online-1/model"
    assert load_policy(out, device="cpu").generate(PROMPTS[:2], Preference.parse("simplicity=1"), GENERATION)


@pytest.mark.parametrize("argv, message", [
    (["prepare", "--objectives", "simplicity,nope", "--out", "{tmp}/run"], "unknown objective 'nope'"),
    (["prepare", "--objectives", "simplicity", "--out", "{tmp}/run", "--mapping", "cubic"], "mapping 'cubic' is unknown"),
    (["prepare", "--objectives", "simplicity", "--out", "{tmp}/run", "--steps", "0"], "steps must be >= 1"),
    (["prepare", "--objectives", "simplicity", "--out", "{tmp}/run", "--mixed-precision", "fp8"],
     "mixed_precision 'fp8' is not one of auto, bf16, fp16, no"),
    (["train", "{tmp}"], "is not a paretoalign run directory"),
    (["online", "{tmp}", "--iterations", "-1"], "--iterations must be >= 0"),
    (["run", "--objectives", "simplicity", "--out", "{tmp}/run", "--budget", "quick", "--iterations", "-2"],
     "--iterations must be >= 0"),
])
def test_cli_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert cli(["ric", *[part.format(tmp=tmp_path) for part in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_online_before_training_and_prepare_into_foreign_folder(tmp_path, capsys):
    data = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    assert cli(["ric", "prepare", "--objectives", "informativeness", "--out", str(tmp_path / "run"),
                "--dataset", str(data)]) == 0
    assert cli(["ric", "online", str(tmp_path / "run"), "--iterations", "1"]) == 2
    assert "has no offline stage yet; run 'paretoalign ric train" in capsys.readouterr().err
    (tmp_path / "run" / "offline").mkdir()  # what a killed training leaves behind
    assert cli(["ric", "train", str(tmp_path / "run")]) == 2
    assert "holds an interrupted training; pass --resume to continue it or --retrain" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli(["ric", "prepare", "--objectives", "informativeness", "--out", str(tmp_path / "mine"),
                "--dataset", str(data)]) == 2
    assert "not a paretoalign run" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------- the demo hook


def test_train_for_demo_quick_budget_and_reload(tiny_model_dir, tmp_path):
    objectives = load_objectives("simplicity,informativeness")
    objectives[0].fit_normalization(["p"] * 2, ["A cat sat.", "Photosynthesis converts electromagnetic radiation."])
    objectives[1].fit_normalization(["p"] * 2, ["one two", "one two three four five six"])
    policy = train_for_demo(objectives, tmp_path / "work", model=str(tiny_model_dir), progress=False)
    assert policy.name == "ric" and policy.objectives == ["simplicity", "informativeness"]
    cost = policy.training_cost
    assert set(cost) == {"generated_tokens", "trained_tokens", "wall_time_s"}
    assert 0 < cost["generated_tokens"] <= 48 * 3 * 40 and cost["trained_tokens"] > 0
    manifest = RunDirectory.open(tmp_path / "work").manifest
    assert manifest["stages"]["offline"]["steps"] == 64 and manifest["normalization"]["informativeness"]["mean"] == 4.0
    again = train_for_demo(objectives, tmp_path / "work", model=str(tiny_model_dir), progress=True)
    assert again.training_cost == cost  # reloaded, not retrained (display settings do not count)
    with pytest.raises(ConfigError, match="budget 'huge' is unknown"):
        train_for_demo(objectives, tmp_path / "other", budget="huge")
