"""HC-RLHF trainer on the tiny model: λ follows the constraint (dual step before the policy step, unbounded by
default), the safety test on its own held-out set decides whether the model is promoted, PTX and the running-mean
baseline work, metrics and manifest carry the constraint, chunked gradients equal one batch, resume equals an
uninterrupted run, and bad input ends in one-line ConfigErrors (also through the CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paretoalign.core.errors import ConfigError, UnknownObjectiveError
from paretoalign.data import load_prompts
from paretoalign.interfaces.cli import main as cli_main
from paretoalign.training.base import FINAL_MODEL
from paretoalign.training.rl.high_confidence import NO_SOLUTION
from paretoalign.training.rl.reinforce import UNSAFE_MODEL, ReinforceLagConfig, ReinforceLagTrainer, safety_set
from paretoalign.training.runner import run_training

PROMPTS = [{"prompt": f"Tell me something about topic number {i}."} for i in range(12)]
ADAPTER = "adapter_model.safetensors"


def config(model_dir: Path, out: Path, **overrides) -> ReinforceLagConfig:
    """A seconds-long run: conciseness as the reward, words beyond 2 as the cost (at most 6 with 8 tokens)."""
    settings = dict(
        model=str(model_dir), objectives="conciseness", cost_objective="length_cost?budget=2", threshold=0.0,
        batch_size=2, samples_per_prompt=3, max_new_tokens=8, max_steps=3, safety_prompts=4, norm_prompts=4,
        output_dir=str(out), progress=False, lr=1e-2, lora_r=4, lora_alpha=8,
    )
    return ReinforceLagConfig(**{**settings, **overrides})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_violated_constraint_raises_lambda_and_the_model_is_not_promoted(tiny_model_dir, tmp_path):
    run = tmp_path / "violated"
    result = run_training("reinforce-lag", config(tiny_model_dir, run, threshold=-1.0), train_data=PROMPTS)
    lines = metrics(run)
    lambdas = [line["lambda"] for line in lines]
    # the dual step comes before the policy step: step 1 already uses λ moved by its own batch's bound
    assert lambdas[0] == pytest.approx(math.exp(0.1 * (lines[0]["cost_bound"] + 1.0)))
    for previous, line in zip(lambdas, lines[1:]):  # SGD on log λ for -(μ̂ + kσ̂ - τ)·λ, lr 0.1
        assert line["lambda"] == pytest.approx(previous * math.exp(0.1 * (line["cost_bound"] + 1.0) * previous))
    assert all(later > earlier for earlier, later in zip(lambdas, lambdas[1:]))  # cost >= 0 > -1 every step
    assert not result.safety.passed and result.safety.verdict == NO_SOLUTION
    assert result.model_dir == run / UNSAFE_MODEL and (run / UNSAFE_MODEL / ADAPTER).is_file()
    assert not (run / FINAL_MODEL).exists()
    saved = manifest(run)
    assert saved["result"] == NO_SOLUTION and saved["safety_test"]["passed"] is False
    assert saved["safety_test"]["n"] == 4 and saved["safety_test"]["ucb"] > -1.0
    assert set(saved["artifacts"]) == {"model_unsafe"}
    assert saved["lambda"] == pytest.approx(lambdas[-1])  # no dual step after the last policy step


def test_met_constraint_lowers_lambda_passes_and_logs_every_quantity(tiny_model_dir, tmp_path):
    run = tmp_path / "met"
    result = run_training("reinforce-lag", config(tiny_model_dir, run, threshold=10.0), train_data=PROMPTS)
    lines = metrics(run)
    lambdas = [line["lambda"] for line in lines]
    assert all(later < earlier for earlier, later in zip(lambdas, lambdas[1:]))
    assert result.safety.passed and result.model_dir == run / FINAL_MODEL
    assert (run / FINAL_MODEL / ADAPTER).is_file() and not (run / UNSAFE_MODEL).exists()
    saved = manifest(run)
    assert saved["result"] == "pass" and saved["constraint"]["cost_objective"] == "length_cost"
    assert saved["artifacts"]["model"]["kind"] == "adapter"
    for key in ("lambda", "cost_mean", "cost_std", "k", "cost_bound", "cost/length_cost", "kl", "entropy",
                "reward/conciseness", "normalized/conciseness", "return", "loss"):
        assert all(math.isfinite(line[key]) for line in lines), key
    first = lines[0]
    assert first["cost_bound"] == pytest.approx(first["cost_mean"] + first["k"] * first["cost_std"])
    assert first["cost_window_size"] == 6 and lines[-1]["cost_window_size"] == 18


def test_chunked_backward_passes_add_up_to_the_full_batch_step(tiny_model_dir, tmp_path):
    whole = run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "whole", max_steps=1, minibatch_size=6),
                         train_data=PROMPTS)
    chunked = run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "chunks", max_steps=1, minibatch_size=2),
                           train_data=PROMPTS)
    first, second = load_file(whole.model_dir / ADAPTER), load_file(chunked.model_dir / ADAPTER)
    assert any(bool(t.abs().sum() > 0) for name, t in first.items() if "lora_B" in name)  # the step moved LoRA-B
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-4, atol=1e-6)


def test_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    straight = run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "straight", max_steps=4),
                            train_data=PROMPTS)
    resumed_run = tmp_path / "resumed"
    run_training("reinforce-lag", config(tiny_model_dir, resumed_run, max_steps=2, save_every=2), train_data=PROMPTS)
    checkpoint = torch.load(resumed_run / "checkpoints" / "checkpoint-00000002" / "trainer_extra.pt",
                            weights_only=True)
    assert checkpoint["cost_window"].numel() == 12 and "log_lambda" in checkpoint["multiplier"]
    resumed = run_training("reinforce-lag", config(tiny_model_dir, resumed_run, max_steps=4, resume=True),
                           train_data=PROMPTS)
    for name, tensor in load_file(straight.model_dir / ADAPTER).items():
        torch.testing.assert_close(load_file(resumed.model_dir / ADAPTER)[name], tensor)
    assert manifest(resumed_run)["lambda"] == pytest.approx(manifest(tmp_path / "straight")["lambda"])
    assert [line["lambda"] for line in metrics(resumed_run)] == pytest.approx(
        [line["lambda"] for line in metrics(tmp_path / "straight")])


@pytest.mark.parametrize("overrides,message", [
    (dict(threshold=None), "needs a finite --threshold"),
    (dict(threshold=float("nan")), "needs a finite --threshold"),
    (dict(cost_objective=None), "needs --cost-objective"),
    (dict(samples_per_prompt=1), "--samples-per-prompt 2 or more"),
    (dict(baseline="ppo"), "not one of rloo, grpo, none"),
    (dict(delta=1.5), "delta must be in"),
    (dict(safety_prompts=1), "safety_prompts must be >= 2"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config(Path("unused"), tmp_path, **overrides)
    assert "\n" not in str(caught.value)


def test_no_baseline_allows_one_sample_per_prompt(tmp_path):
    assert config(Path("unused"), tmp_path, samples_per_prompt=1, baseline="none").samples_per_prompt == 1


def test_unregistered_cost_objective_and_too_many_safety_prompts(tiny_model_dir, tmp_path):
    with pytest.raises(UnknownObjectiveError, match="unknown objective 'toxicity'"):
        run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "a", cost_objective="toxicity"),
                     train_data=PROMPTS)
    with pytest.raises(ConfigError, match="the safety data has 85 prompts, fewer than --safety-prompts 500"):
        run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "b", safety_prompts=500), train_data=PROMPTS)


def test_the_safety_set_is_its_own_data_never_the_training_prompts(tiny_model_dir, tmp_path):
    trainer = ReinforceLagTrainer(config(tiny_model_dir, tmp_path / "a"), PROMPTS)
    assert trainer.safety_prompts == [r.prompt for r in load_prompts("instructions", "eval")[:4]]
    assert len(trainer.train_examples) == len(PROMPTS)  # nothing is taken out of the training data
    assert set(trainer.safety_prompts).isdisjoint(row["prompt"] for row in PROMPTS)
    with pytest.raises(ConfigError, match=r"4 safety prompt\(s\) are also training prompts") as caught:
        ReinforceLagTrainer(config(tiny_model_dir, tmp_path / "b"), PROMPTS, safety_data=PROMPTS[:6])
    assert "\n" not in str(caught.value)
    assert safety_set([{"prompt": "x"}, {"prompt": "y"}], 2, ["z"]) == ["x", "y"]


def test_defaults_are_the_originals_c2_one_and_lambda_unbounded(tiny_model_dir, tmp_path):
    defaults = ReinforceLagConfig(cost_objective="length_cost", threshold=0.0)
    assert (defaults.c2, defaults.lambda_max, defaults.baseline) == (1.0, None, "rloo")
    run = tmp_path / "unbounded"
    run_training("reinforce-lag", config(tiny_model_dir, run, threshold=-1.0, lambda_lr=1.0, max_steps=2),
                 train_data=PROMPTS)
    assert max(line["lambda"] for line in metrics(run)) > 5.0  # violation >= 1 each step: e, then e·e^e, ...


def test_ptx_adds_a_language_modelling_loss_to_the_step(tiny_model_dir, tmp_path):
    data = tmp_path / "ptx.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}", "response": "The sea is blue."}) + "\n" for i in range(3)))
    plain = run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "plain", max_steps=1), train_data=PROMPTS)
    ptx = run_training("reinforce-lag", config(tiny_model_dir, tmp_path / "ptx", max_steps=1, ptx_coef=8.0,
                                               ptx_dataset=[str(data)]), train_data=PROMPTS)
    assert metrics(tmp_path / "ptx")[0]["ptx_loss"] > 0 and "ptx_loss" not in metrics(tmp_path / "plain")[0]
    moved = load_file(ptx.model_dir / ADAPTER)
    assert any(not torch.allclose(t, moved[name]) for name, t in load_file(plain.model_dir / ADAPTER).items())


def test_no_baseline_subtracts_the_running_mean_of_the_returns(tiny_model_dir, tmp_path):
    run = tmp_path / "none"
    run_training("reinforce-lag", config(tiny_model_dir, run, baseline="none", samples_per_prompt=1, batch_size=3,
                                         threshold=10.0), train_data=PROMPTS)
    lines = metrics(run)
    returns = [line["return"] for line in lines]
    assert [line["baseline"] for line in lines] == pytest.approx(
        [sum(returns[: i + 1]) / (i + 1) for i in range(len(returns))], rel=1e-5)  # equal batches: mean of means


def test_cli_reports_a_missing_threshold_as_one_line(capsys):
    assert cli_main(["reinforce-lag", "--cost-objective", "length_cost"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a finite --threshold" in err and len(err.splitlines()) == 1


def test_cli_prints_the_safety_verdict(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in PROMPTS))
    code = cli_main(["reinforce-lag", "--model", str(tiny_model_dir), "--dataset", str(prompts),
                     "--objectives", "conciseness", "--cost-objective", "length_cost?budget=2", "--threshold", "-1",
                     "--samples-per-prompt", "2", "--batch-size", "2", "--max-new-tokens", "4", "--max-steps", "1",
                     "--safety-prompts", "4", "--norm-prompts", "4", "--output-dir", str(tmp_path / "run"),
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "no solution found" in out.splitlines()[-1] and "UCB" in out
