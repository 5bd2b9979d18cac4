"""PPO and MORLHF: GAE against a plain recursion, clipped surrogate and value losses, the KL controllers,
running moments, a tiny run that learns shorter answers, checkpoint/resume equality, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.objectives import Conciseness, Informativeness
from paretoalign.training.runner import config_for, run_training
from paretoalign.training.rl.functional import (
    AdaptiveKLController,
    RunningMoments,
    clipped_surrogate_loss,
    clipped_value_loss,
    gae_advantages,
    token_rewards,
)
from paretoalign.training.rl.ppo import VALUE_HEADS, MORLHFConfig, PPOConfig, PPOTrainer

from tiny import make_tiny_llama

PROMPTS = [{"prompt": f"Question {i}: explain the sea and the sky."} for i in range(24)]


def make_stopping_llama(path: Path) -> Path:
    """The tiny Llama with sharper random weights and an EOS row along the mean hidden state, so about half
    of its 8-token samples end early: a policy whose length a reward can actually change."""
    make_tiny_llama(path)
    config = AutoConfig.from_pretrained(path)
    config.initializer_range, config.tie_word_embeddings = 0.3, False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        encoded = tokenizer([row["prompt"] for row in PROMPTS], return_tensors="pt", padding=True)
        mean = model.model(**encoded).last_hidden_state.reshape(-1, config.hidden_size).mean(0)
        model.lm_head.weight[tokenizer.eos_token_id] = 6 * mean / mean.norm() ** 2
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def stopping_model_dir(tmp_path_factory) -> Path:
    return make_stopping_llama(tmp_path_factory.mktemp("stopping-llama"))


def fitted_conciseness() -> Conciseness:
    objective = Conciseness()
    objective.fit_normalization(["q"] * 4, ["one", "one two", "one two three", "one two three four"])
    return objective


def ppo_args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model_dir), "--objectives", "conciseness", "--output-dir", str(out), "--batch-size", "8",
            "--max-new-tokens", "8", "--lr", "1e-2", "--lora-r", "8", "--minibatch-size", "4", "--ppo-epochs", "2",
            "--norm-prompts", "8", "--no-progress", *extra]


# ---------------------------------------------------------------------------------------------- the math


def reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """GAE of one unpadded episode, written out from the definition."""
    advantages = []
    for t in range(len(rewards)):
        total = 0.0
        for k in range(t, len(rewards)):
            next_value = values[k + 1] if k + 1 < len(values) else 0.0
            delta = rewards[k] + gamma * next_value - values[k]
            total += (gamma * lam) ** (k - t) * delta
        advantages.append(total)
    return advantages


def test_gae_matches_the_definition_on_padded_rows():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    lengths = [5, 3, 1]
    mask = torch.tensor([[j < n for j in range(5)] for n in lengths])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    for row, n in enumerate(lengths):
        expected = reference_gae(rewards[row, :n].tolist(), values[row, :n].tolist(), 0.9, 0.8)
        torch.testing.assert_close(advantages[row, :n], torch.tensor(expected), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(returns[row, :n], advantages[row, :n] + values[row, :n])
        assert (advantages[row, n:] == 0).all() and (returns[row, n:] == 0).all()


def test_token_rewards_put_the_score_on_the_last_token():
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards = token_rewards(torch.tensor([2.0, -1.0]), torch.full((2, 3), -0.1), mask)
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, -0.1, 1.9], [-1.1, 0.0, 0.0]]))


def test_clipped_surrogate_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5]]))
    advantages = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss, metrics = clipped_surrogate_loss(new, old, advantages, mask, clip_range=0.2)
    # token 0: min(1.5, 1.2) * 1 -> 1.2 (clipped); token 1: min(0.5, 0.8) -> 0.5; token 2: max(-2 * 1.1, ...) -> -2.2
    torch.testing.assert_close(loss, torch.tensor(-(1.2 + 0.5 - 2.2) / 3))
    torch.testing.assert_close(metrics["clip_frac"], torch.tensor(1 / 3))


def test_clipped_value_loss_values():
    old = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, -1.0]])
    loss, clipped = clipped_value_loss(values, old, returns, torch.ones(1, 2, dtype=torch.bool), clip_range=0.2)
    # token 0: max((1-1)^2, (0.2-1)^2) = 0.64; token 1: max(1.1^2, 1.1^2) = 1.21
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.64 + 1.21) / 2))
    torch.testing.assert_close(clipped, torch.tensor(0.5))


def test_adaptive_kl_controller_follows_its_target():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(12.0, n_steps=10)  # KL twice the target: error clipped to +0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    high = controller.value
    controller.update(3.0, n_steps=10)
    assert controller.value == pytest.approx(high * (1 - 0.2 * 10 / 100))
    controller.update(6.0, n_steps=10)
    assert controller.value == pytest.approx(high * (1 - 0.2 * 10 / 100))
    restored = AdaptiveKLController(0.5, target=6.0, horizon=100)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value


def test_running_moments_equal_the_moments_of_everything_seen():
    generator = torch.Generator().manual_seed(1)
    chunks = [torch.randn(n, generator=generator) * 3 + 2 for n in (5, 1, 17)]
    moments = RunningMoments()
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks).double()
    assert moments.mean == pytest.approx(float(everything.mean()))
    assert moments.std == pytest.approx(float(everything.std(unbiased=False)))
    assert moments.count == 23


# ---------------------------------------------------------------------------------------------- training


def test_ppo_on_conciseness_shortens_answers(stopping_model_dir, tmp_path):
    result = run_training("ppo", ppo_args(stopping_model_dir, tmp_path / "run", "--max-steps", "6"),
                          train_data=PROMPTS[:16], eval_data=PROMPTS[16:])
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "reward/conciseness" in row]
    assert [row["step"] for row in steps] == list(range(1, 7))
    for key in ("reward/conciseness", "normalized/conciseness", "kl", "entropy", "value_loss", "policy_loss",
                "clip_frac", "kl_coef", "generated_tokens"):
        assert all(np.isfinite(row[key]) for row in steps), key
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert steps[-1]["response_length"] < steps[0]["response_length"] - 2
    assert result.metrics["eval_response_length"] < 3.5
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["method"] == "ppo" and manifest["normalization"]["conciseness"]["count"] == 8
    assert manifest["artifacts"]["model"]["kind"] == "adapter"
    assert manifest["generated_tokens"] == steps[-1]["generated_tokens"] > 0
    assert set(load_file(result.model_dir / VALUE_HEADS)) == {"reward.weight", "reward.bias"}
    assert (result.model_dir / "adapter_config.json").is_file()


def test_stop_and_resume_equals_an_uninterrupted_run(stopping_model_dir, tmp_path):
    extra = ("--save-every", "2", "--kl-target", "1", "--kl-horizon", "50", "--reward-norm", "running")
    straight = run_training("ppo", ppo_args(stopping_model_dir, tmp_path / "straight", "--max-steps", "4", *extra),
                            train_data=PROMPTS[:8])
    run_training("ppo", ppo_args(stopping_model_dir, tmp_path / "split", "--max-steps", "2", *extra),
                 train_data=PROMPTS[:8])
    resumed = run_training("ppo", ppo_args(stopping_model_dir, tmp_path / "split", "--max-steps", "4", "--resume",
                                           *extra), train_data=PROMPTS[:8])
    expected, got = load_file(straight.model_dir / "adapter_model.safetensors"), load_file(
        resumed.model_dir / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(load_file(resumed.model_dir / VALUE_HEADS), load_file(straight.model_dir / VALUE_HEADS))
    lines = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == [1, 2, 3, 4]
    for mine, theirs in zip(lines, reference):
        assert mine["kl_coef"] == pytest.approx(theirs["kl_coef"])
        assert mine["reward/conciseness"] == pytest.approx(theirs["reward/conciseness"])


def test_early_stopping_skips_the_remaining_epochs_once_the_policy_kl_passes_its_target(stopping_model_dir, tmp_path):
    def epochs_run(name: str, *extra: str) -> float:
        result = run_training("ppo", ppo_args(stopping_model_dir, tmp_path / name, "--max-steps", "1", "--ppo-epochs",
                                              "4", "--lr", "5e-2", *extra), train_data=PROMPTS[:8])
        return json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])["ppo_epochs_run"]

    assert epochs_run("all") == 4
    assert epochs_run("stopped", "--early-stopping", "--target-kl", "1e-6") < 4
    assert epochs_run("loose", "--early-stopping", "--target-kl", "100") == 4


def test_morlhf_scalarizes_normalized_rewards_of_its_preference(stopping_model_dir, tmp_path):
    objectives = [fitted_conciseness(), Informativeness()]
    config = config_for("morlhf", ppo_args(stopping_model_dir, tmp_path / "m", "--objectives",
                                           "conciseness,informativeness", "--preference",
                                           "conciseness=0.75,informativeness=0.25", "--max-steps", "1"))
    trainer = run_training("morlhf", config, train_data=PROMPTS[:8], objectives=objectives)
    manifest = json.loads((trainer.run_dir / "manifest.json").read_text())
    assert manifest["method"] == "morlhf"
    assert manifest["preference"] == {"conciseness": 0.75, "informativeness": 0.25}
    assert manifest["normalization"]["conciseness"]["count"] == 4, "given statistics are kept"
    assert manifest["normalization"]["informativeness"]["count"] == 8, "missing ones are fitted on the reference"
    line = json.loads((trainer.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    expected = 0.75 * line["normalized/conciseness"] + 0.25 * line["normalized/informativeness"]
    assert line["score"] == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kind", "flags", "message"),
    [
        ("morlhf", [], "morlhf needs --preference"),
        ("ppo", ["--full-finetune"], "drop --full-finetune"),
        ("ppo", ["--grad-accum", "2"], "--minibatch-size"),
        ("ppo", ["--reward-norm", "sometimes"], "reward_norm 'sometimes'"),
        ("ppo", ["--clip-range", "0"], "clip_range must be > 0"),
        ("ppo", ["--preference", "conciseness"], "NAME=WEIGHT"),
    ],
)
def test_bad_config_is_a_one_line_error(kind, flags, message):
    with pytest.raises(ConfigError, match=message) as error:
        config_for(kind, flags)
    assert "\n" not in str(error.value)


def test_preference_must_name_the_objectives(stopping_model_dir, tmp_path):
    config = PPOConfig(model=str(stopping_model_dir), objectives="conciseness", preference="relevance=1",
                       output_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="unknown objective 'relevance'"):
        PPOTrainer(config, PROMPTS[:2])
    assert MORLHFConfig(preference="conciseness=1").objectives == "conciseness,relevance"
