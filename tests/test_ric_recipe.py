"""RiC as a recipe on the tiny real Llama: prepare, offline SFT, online iterations, RiCPolicy, resuming an
interrupted fit, the stage commands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.core.rundir import RunDirectory
from paretoalign.data import ScoredResponse, read_jsonl
from paretoalign.generation import STEERING, GenerationConfig
from paretoalign.interfaces.cli import main as cli
from paretoalign.methods import get_recipe
from paretoalign.methods.common.base_samples import steered_messages
from paretoalign.methods.common.instructions import INSTRUCTIONS
from paretoalign.methods.ric import Conditioning, is_degenerate, mors_mask
from paretoalign.methods.ric.stages import (
    OFFLINE_DATA,
    conditioned_prompt_transform,
    online_sampling,
    online_training_data,
    rewards_of,
)
from paretoalign.objectives import apply_stats, count_words, load_objectives
from paretoalign.training import SFTConfig, SFTTrainer
from paretoalign.training.logprobs import IGNORE_INDEX

OBJECTIVES = "simplicity,informativeness"
PROMPTS = ["Explain rain to a child.", "Give me three tips for sleep.", "What is a poem?", "How do I cook rice?"]
PAIRS = [
    {"prompt": "What is the sky?", "chosen": "The sky is blue.", "rejected": "The sky is the air above us all day."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hello there, my friend."},
    {"prompt": "Name a fruit.", "chosen": "An apple is a fruit that grows on trees.", "rejected": "Pear."},
]
GENERATION = GenerationConfig(max_new_tokens=8, seed=3)
SIMPLE = Preference.parse("simplicity=1,informativeness=0")
INFORMATIVE = Preference.parse("simplicity=0,informativeness=1")
RIC = get_recipe("ric")


def write_lines(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_config(model_dir, dataset, **overrides):
    values = dict(model=str(model_dir), dataset=[str(dataset)], samples_per_prompt=2, max_new_tokens=8, steps=4,
                  batch_size=4, max_length=256, save_every=2, lora_r=4, lora_alpha=8, lr=5e-2, online_iterations=2,
                  online_samples=8, online_steps=2, device="cpu", progress=False)
    return RIC.config("quick", **{**values, **overrides})


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("ric-data") / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model_dir, prompts_file):
    """A finished run: tiny-model answers to PROMPTS, offline SFT (checkpoints at steps 2 and 4), two online
    iterations; normalization fitted on the base model."""
    return RIC.fit(OBJECTIVES, tmp_path_factory.mktemp("ric") / "run", tiny_config(tiny_model_dir, prompts_file))


@pytest.fixture(scope="module")
def policy(fitted):
    return RIC.load(fitted.path, device="cpu", dtype="float32")


def interrupted_copy(run, tmp_path, *, keep: str) -> RunDirectory:
    """A copy of the finished ``run`` as an interrupt would have left it: ``keep="prepare"`` (offline training
    stopped after its step-2 checkpoint) or ``keep="online-1"`` (iteration 2 sampled, not trained)."""
    path = tmp_path / "copy"
    shutil.copytree(run.path, path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["status"] = "running"
    del manifest["stages"]["online"]
    if keep == "prepare":
        del manifest["stages"]["train"], manifest["online_iterations"], manifest["artifacts"]["adapter"]
        for folder in ("offline/model", "offline/checkpoints/checkpoint-00000004", "online-1", "online-2"):
            shutil.rmtree(path / folder)
        metrics = [json.loads(line) for line in (path / "offline" / "metrics.jsonl").read_text().splitlines()]
        (path / "offline" / "metrics.jsonl").write_text(
            "".join(json.dumps({**m, "before_the_interrupt": True}) + "\n" for m in metrics if m["step"] <= 2))
    else:
        second = manifest["online_iterations"][1]
        for key in ("original_kept", "examples", "steps", "trained_tokens", "adapter"):
            del second[key]
        manifest["artifacts"]["adapter"]["path"] = "online-1/model"
        shutil.rmtree(path / "online-2")
    manifest["compute"] = {key: sum(stage.get(key, 0) for stage in manifest["stages"].values())
                           for key in manifest["compute"]}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return RunDirectory.open(path)


def adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


# ---------------------------------------------------------------- prepare


def test_prepare_scores_both_sides_of_pairs_with_the_objectives_statistics(tmp_path):
    data = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    objectives = load_objectives("informativeness,conciseness")
    texts = [text for pair in PAIRS for text in (pair["chosen"], pair["rejected"])]
    for objective in objectives:
        objective.fit_normalization(["p"] * 2, ["one two three", "one"])  # mean 2 words, std 1
    run = RIC.fit(objectives, tmp_path / "run", RIC.config(dataset=[str(data)], progress=False), until="prepare")
    records = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    assert [r.response for r in records] == texts
    words = np.array([count_words(text) for text in texts], dtype=float)
    assert [r.meta["rewards"]["informativeness"] for r in records] == pytest.approx(words - 2)
    assert [r.meta["rewards"]["conciseness"] for r in records] == pytest.approx(2 - words)  # fewer words is better
    assert [r.scores["conciseness"] for r in records] == words.tolist()
    assert run.manifest["normalization"]["informativeness"]["mean"] == 2.0
    assert run.manifest["target_range"] == {"informativeness": [words.min() - 2, words.max() - 2],
                                            "conciseness": [2 - words.max(), 2 - words.min()]}
    assert run.manifest["stages"]["prepare"]["generated_tokens"] == 0 and not run.finished


def test_samples_from_must_be_a_run_with_samples_on_the_same_base_model(fitted, tiny_model_dir, tiny_model_dir_b,
                                                                        tmp_path):
    with pytest.raises(ConfigError, match="samples_from replaces the offline dataset"):
        RIC.config(samples_from=str(fitted.path), dataset=["brief"])
    objectives = load_objectives(OBJECTIVES)
    apply_stats(objectives, fitted.manifest["normalization"])
    config = RIC.config(model=str(tiny_model_dir), samples_from=str(fitted.path), device="cpu", progress=False)
    with pytest.raises(ConfigError, match="has no finished base-model samples; give a soups or mod run"):
        RIC.fit(objectives, tmp_path / "a", config, until="prepare")
    soups = get_recipe("soups")
    source = soups.fit(objectives, tmp_path / "soups", soups.config(
        model=str(tiny_model_dir_b), trainer="dpo", prompts=2, samples=2, max_new_tokens=4, device="cpu",
        progress=False), until="samples")
    with pytest.raises(ConfigError, match="this run uses .* reuse samples of the same base model"):
        RIC.fit(objectives, tmp_path / "b", RIC.config(model=str(tiny_model_dir), samples_from=str(source.path),
                                                       device="cpu", progress=False), until="prepare")
    assert not (tmp_path / "b" / OFFLINE_DATA).exists()


def test_steered_messages_cycle_plain_and_objective_instructions():
    messages = steered_messages(["Q1", "Q2"], load_objectives(OBJECTIVES), 3)
    assert messages[:3] == ["Q1", "Q1\n\nMost importantly: " + INSTRUCTIONS["simplicity"],
                            "Q1\n\nMost importantly: " + INSTRUCTIONS["informativeness"]]
    assert messages[3] == "Q2"
    assert steered_messages(["Q1", "Q2"], load_objectives(OBJECTIVES), 2, steered=False) == ["Q1", "Q1", "Q2", "Q2"]


def test_prepare_samples_the_base_model_and_the_run_keeps_statistics_and_range(fitted):
    records = read_jsonl(fitted.path / OFFLINE_DATA, ScoredResponse)
    assert [r.prompt for r in records] == [p for p in PROMPTS for _ in range(2)]  # plain prompts, 2 samples each
    stage = fitted.manifest["stages"]["prepare"]
    assert stage["sampled_prompts"] == 4 and 0 < stage["generated_tokens"] <= 8 * 8
    assert set(fitted.manifest["normalization"]) == {"simplicity", "informativeness"}  # fitted on the base model
    assert fitted.manifest["normalization"] == fitted.fingerprint["normalization"]
    rewards = rewards_of(records, ["simplicity", "informativeness"])
    assert fitted.manifest["target_range"]["simplicity"] == [pytest.approx(rewards["simplicity"].min()),
                                                             pytest.approx(rewards["simplicity"].max())]


# ---------------------------------------------------------------- offline SFT and the policy


def test_sft_sees_targets_in_the_prompt_and_learns_only_the_response(tiny, tmp_path):
    model, tokenizer = tiny
    record = ScoredResponse(prompt="What is rain?", response="Water from clouds.", scores={},
                            meta={"rewards": {"informativeness": -1.24, "simplicity": 0.5}})
    transform = conditioned_prompt_transform(Conditioning(), ["simplicity", "informativeness"])
    trainer = SFTTrainer(SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, progress=False), [record],
                         model=model, tokenizer=tokenizer, prompt_transform=transform)
    example = trainer.train_examples[0]
    prompt_ids = [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]
    learned = [label for label in example["labels"] if label != IGNORE_INDEX]
    assert "What is rain?\n\n<simplicity> 0.5 <informativeness> -1.2" in tokenizer.decode(prompt_ids)
    assert tokenizer.decode(learned).startswith("Water from clouds.")


def test_each_row_carries_its_own_targets_in_one_batch(fitted, policy):
    (low_s, high_s), (low_i, high_i) = fitted.manifest["target_range"].values()
    mixed = policy.generate(PROMPTS, [SIMPLE, INFORMATIVE, SIMPLE, INFORMATIVE], GENERATION)
    assert [r.meta[STEERING]["targets"] for r in mixed] == [
        {"simplicity": high_s, "informativeness": low_i}, {"simplicity": low_s, "informativeness": high_i}] * 2
    assert [r.prompt for r in mixed] == PROMPTS  # objectives and π_ref see the plain prompt
    alone = [policy.generate([prompt], preference, GENERATION)[0]
             for prompt, preference in zip(PROMPTS, [SIMPLE, INFORMATIVE] * 2)]
    assert [r.token_ids for r in mixed] == [r.token_ids for r in alone]
    assert [r.text for r in policy.generate(PROMPTS, SIMPLE, GENERATION)] != [
        r.text for r in policy.generate(PROMPTS, INFORMATIVE, GENERATION)]


def test_a_preference_must_weight_the_objectives_it_was_trained_for(policy):
    with pytest.raises(ConfigError, match="the ric policy needs a preference; give weights over simplicity, "
                                          "informativeness"):
        policy.generate(PROMPTS, None, GENERATION)
    with pytest.raises(ConfigError, match="has no policy for objective 'conciseness'; it was trained for simplicity"):
        policy.generate(PROMPTS[:1], Preference.parse("conciseness=1"), GENERATION)


def test_reference_is_the_base_model_with_adapters_off(policy, tiny_model_dir):
    reference, tokenizer = policy.reference()
    ids = tokenizer(["The sky is blue"], return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        assert torch.allclose(reference(input_ids=ids).logits, expected, atol=1e-5)
        assert not torch.allclose(policy.model(input_ids=ids).logits, expected, atol=1e-3)


def test_targets_outside_the_range_are_clipped_with_a_warning(policy):
    high = {name: hi + 5 for name, (_, hi) in policy.target_range.items()}
    with pytest.warns(UserWarning, match="outside the fitted range were clipped"):
        responses = policy.generate_for_targets(PROMPTS[:1], [high], GENERATION)
    assert responses[0].meta[STEERING]["targets"] == {name: hi for name, (_, hi) in policy.target_range.items()}


def test_the_run_loads_from_anywhere_with_the_newest_adapter(fitted, policy, tmp_path):
    assert fitted.manifest["artifacts"]["adapter"]["path"] == "online-2/model"  # relative to the run
    moved = shutil.copytree(fitted.path, tmp_path / "renamed")
    loaded = RIC.load(moved, device="cpu", dtype="float32")
    preference = Preference.parse("simplicity=0.3,informativeness=0.7")
    assert [r.token_ids for r in loaded.generate(PROMPTS, preference, GENERATION)] == [
        r.token_ids for r in policy.generate(PROMPTS, preference, GENERATION)]
    assert loaded.training_cost == fitted.compute and fitted.compute["trained_tokens"] > 0


# ---------------------------------------------------------------- online iterations


def test_online_iteration_samples_relabels_filters_and_trains_at_the_online_rate(fitted):
    first, second = fitted.manifest["online_iterations"]
    online = read_jsonl(fitted.path / "data" / "online-1.jsonl", ScoredResponse)
    assert first["sampled"] == 8 and 1 <= first["kept"] == len(online) <= 8 - first["degenerate"]
    assert first["sampling"] == {"temperature": 0.7, "top_p": 0.9, "min_new_tokens": 1}  # EOS banned first
    assert not any(is_degenerate(r.response) for r in online)
    original = [r for r in read_jsonl(fitted.path / OFFLINE_DATA, ScoredResponse) if not is_degenerate(r.response)]
    assert first["original_kept"] == int(mors_mask(rewards_of(original, ["simplicity", "informativeness"])).sum())
    assert first["examples"] == first["original_kept"] + first["kept"] and first["steps"] == 2
    assert second["examples"] == second["original_kept"] + first["kept"] + second["kept"]  # all online data so far
    objectives = load_objectives(OBJECTIVES)
    apply_stats(objectives, fitted.manifest["normalization"])
    for objective in objectives:  # relabelled with the rewards actually obtained, on the run's scale
        obtained = objective.reward([r.prompt for r in online], [r.response for r in online])
        assert [r.meta["rewards"][objective.name] for r in online] == pytest.approx(obtained)
    for iteration in (1, 2):  # the original's online rate and constant schedule, not the offline lr
        metrics = (fitted.path / f"online-{iteration}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["lr"] for line in metrics] == [1e-5, 1e-5]
    stages = fitted.manifest["stages"]
    assert stages["online"]["generated_tokens"] == first["generated_tokens"] + second["generated_tokens"]
    assert fitted.compute["trained_tokens"] == pytest.approx(sum(s["trained_tokens"] for s in stages.values()))


def test_online_sampling_is_the_originals():
    sampling = online_sampling(RIC.config("full"), iteration=1)
    assert (sampling.temperature, sampling.top_p, sampling.min_new_tokens) == (0.7, 0.9, 1)


def test_the_original_data_is_capped_by_a_seeded_sample(fitted):
    objectives = load_objectives(OBJECTIVES)
    names = [o.name for o in objectives]
    config = tiny_config("unused", "unused", original_cap=3)
    data, kept = online_training_data(fitted, 1, objectives, config)
    original = [r for r in read_jsonl(fitted.path / OFFLINE_DATA, ScoredResponse) if not is_degenerate(r.response)]
    survivors = [r.response for r, k in zip(original, mors_mask(rewards_of(original, names))) if k]
    assert kept == 3 < len(survivors) and set(r.response for r in data[:3]) <= set(survivors)
    assert len(data) == 3 + fitted.manifest["online_iterations"][0]["kept"]
    assert online_training_data(fitted, 1, objectives, config)[0] == data


# ---------------------------------------------------------------- an interrupted fit goes on


def test_an_interrupted_offline_training_resumes_from_its_checkpoint(fitted, tiny_model_dir, prompts_file, tmp_path):
    run = interrupted_copy(fitted, tmp_path, keep="prepare")
    sampled = (run.path / OFFLINE_DATA).stat().st_mtime_ns
    messages = []
    resumed = RIC.fit(OBJECTIVES, run.path, tiny_config(tiny_model_dir, prompts_file), until="train",
                      log=messages.append)
    assert any("resuming the unfinished ric run" in m and "stages done: prepare" in m for m in messages)
    assert (run.path / OFFLINE_DATA).stat().st_mtime_ns == sampled  # prepare was not redone
    metrics = [json.loads(line) for line in (run.path / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m.get("before_the_interrupt", False) for m in metrics] == [True, True, False, False]  # from step 2 on
    assert resumed.manifest["stages"]["train"]["steps"] == 4
    expected, got = adapter_weights(fitted.path / "offline/model"), adapter_weights(run.path / "offline/model")
    assert all(torch.allclose(expected[key], got[key], atol=1e-6) for key in expected)  # as if never interrupted


def test_an_interrupted_online_stage_keeps_finished_iterations_and_samples(fitted, tiny_model_dir, prompts_file,
                                                                           tmp_path):
    run = interrupted_copy(fitted, tmp_path, keep="online-1")
    kept = {path: (run.path / path).stat().st_mtime_ns
            for path in ("online-1/model/adapter_model.safetensors", "data/online-1.jsonl", "data/online-2.jsonl")}
    resumed = RIC.fit(OBJECTIVES, run.path, tiny_config(tiny_model_dir, prompts_file))
    assert resumed.finished and {path: (run.path / path).stat().st_mtime_ns for path in kept} == kept
    before, after = fitted.manifest["online_iterations"], resumed.manifest["online_iterations"]
    assert after == [before[0], {**before[1], "wall_time_s": after[1]["wall_time_s"]}]  # iteration 2 trained again
    assert resumed.manifest["artifacts"]["adapter"]["path"] == "online-2/model"
    expected, got = adapter_weights(fitted.path / "online-2/model"), adapter_weights(run.path / "online-2/model")
    assert all(torch.allclose(expected[key], got[key], atol=1e-6) for key in expected)


# ---------------------------------------------------------------- settings and the stage commands


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="mapping 'cubic' is not one of ric, l2, linear"):
        RIC.config(mapping="cubic")
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0"):
        RIC.config(steps=0)
    with pytest.raises(ConfigError, match="mixed_precision 'fp8' is not one of auto, bf16, fp16, no"):
        RIC.config(mixed_precision="fp8")
    with pytest.raises(ConfigError, match="online sampling needs temperature > 0 and top_p in"):
        RIC.config(online_top_p=0.0)


def test_stage_commands_fit_up_to_a_stage_then_go_on(tiny_model_dir, tmp_path, capsys):
    data = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "run"
    flags = ["--objectives", OBJECTIVES, "--out", str(out), "--model", str(tiny_model_dir), "--dataset", str(data),
             "--max-new-tokens", "6", "--steps", "2", "--batch-size", "2", "--lora-r", "4", "--max-length", "256",
             "--device", "cpu", "--no-progress"]
    assert cli(["ric", "prepare", *flags]) == 0
    assert "stopped after prepare" in capsys.readouterr().out
    assert cli(["fit", "ric", *flags]) == 0
    captured = capsys.readouterr()
    assert "resuming the unfinished ric run" in captured.err and "ric run finished" in captured.out
    run = RunDirectory.open(out)
    assert run.finished and run.manifest["stages"]["prepare"]["responses"] == 6
    assert cli(["ric", "train", *flags, "--mapping", "cubic"]) == 2
    err = capsys.readouterr().err
    assert "mapping 'cubic' is not one of ric, l2, linear" in err and err.count("\n") == 1
