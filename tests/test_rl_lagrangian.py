"""PPO-Lagrangian: the dual step's direction, clamp and delay; separate critics (from the cost score model where
there is one), value clip 5 and token rewards clipped to ±50; a tiny constrained run logs λ and J_c every step,
plots them, and resumes to the same λ; one-line errors for a missing threshold or cost objective."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.interfaces.cli import main as cli_main
from paretoalign.models import token_values
from paretoalign.objectives import Informativeness, LengthCost, NormStats, Objective, ScoreModelObjective
from paretoalign.training.rl.experience import Experience
from paretoalign.training.rl.lagrangian import LAMBDA_PLOT, LagrangeMultiplier, PPOLagConfig, PPOLagTrainer
from paretoalign.training.runner import config_for

from test_rl_ppo import PROMPTS, stopping_model_dir  # noqa: F401  (shared module fixture)


def test_lambda_rises_while_violated_falls_after_and_is_clamped():
    multiplier = LagrangeMultiplier(init=1.0, lr=0.1, max_value=5.0)
    multiplier.update(violation=2.0, step=0)
    # d/dlogλ of −v·λ is −v·λ, so SGD adds lr·v·λ to log λ
    assert multiplier.value == pytest.approx(math.exp(0.1 * 2.0))
    risen = multiplier.value
    multiplier.update(violation=-1.0, step=1)
    assert multiplier.value == pytest.approx(risen * math.exp(-0.1 * risen))
    for step in range(2, 40):
        multiplier.update(violation=10.0, step=step)
    assert multiplier.value == pytest.approx(5.0)


def test_lambda_waits_for_the_update_delay_and_restores_from_its_state():
    multiplier = LagrangeMultiplier(init=2.0, lr=0.1, max_value=5.0, delay=3)
    for step in range(3):
        multiplier.update(violation=4.0, step=step)
    assert multiplier.value == pytest.approx(2.0)
    multiplier.update(violation=4.0, step=3)
    assert multiplier.value > 2.0
    copy = LagrangeMultiplier(init=1.0, lr=0.1, max_value=5.0)
    copy.load_state_dict(multiplier.state_dict())
    assert copy.value == multiplier.value


def test_lambda_is_unbounded_without_a_max():
    multiplier = LagrangeMultiplier(init=1.0, lr=1.0, max_value=None)
    for step in range(3):
        multiplier.update(violation=2.0, step=step)
    assert multiplier.value > 5.0


def lag_config(model_dir: Path, out: Path, steps: int, **overrides) -> PPOLagConfig:
    values = dict(model=str(model_dir), output_dir=str(out), objectives="informativeness",
                  cost_objective="length_cost", threshold=0.0, batch_size=8, max_new_tokens=8, lr=1e-2, lora_r=8,
                  minibatch_size=4, ppo_epochs=2, norm_prompts=8, progress=False, max_steps=steps,
                  lambda_lr=0.5, cost_window=8, save_every=2)
    return PPOLagConfig(**{**values, **overrides})


def lag_trainer(config: PPOLagConfig) -> PPOLagTrainer:
    return PPOLagTrainer(config, PROMPTS[:16], objectives=[Informativeness()], cost_objective=LengthCost(budget=1))


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_constrained_run_logs_lambda_and_cost_every_step_and_plots_them(stopping_model_dir, tmp_path):
    result = lag_trainer(lag_config(stopping_model_dir, tmp_path / "lag", 3)).train()
    rows = metric_rows(result.run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"lambda", "J_c", "cost/length_cost", "reward/informativeness", "value_loss/cost",
                "value_loss/reward"} <= set(row)
    first = rows[0]
    assert first["J_c"] == pytest.approx(first["cost/length_cost"], rel=1e-5)
    assert first["J_c"] > 0, "the tiny model's answers exceed a one-word budget"
    assert first["lambda"] == pytest.approx(math.exp(0.5 * first["J_c"]), rel=1e-5)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["cost_objective"] == "length_cost" and manifest["threshold"] == 0.0
    assert manifest["lambda"] == pytest.approx(rows[-1]["lambda"])
    assert manifest["artifacts"]["lambda_cost_plot"]["path"] == LAMBDA_PLOT
    assert (result.run_dir / LAMBDA_PLOT).read_bytes().startswith(b"\x89PNG")


def test_resume_restores_lambda_its_optimizer_and_the_cost_window(stopping_model_dir, tmp_path):
    straight = lag_trainer(lag_config(stopping_model_dir, tmp_path / "straight", 4)).train()
    lag_trainer(lag_config(stopping_model_dir, tmp_path / "split", 2)).train()
    resumed = lag_trainer(lag_config(stopping_model_dir, tmp_path / "split", 4, resume=True)).train()
    for mine, theirs in zip(metric_rows(resumed.run_dir), metric_rows(straight.run_dir), strict=True):
        assert mine["lambda"] == pytest.approx(theirs["lambda"], rel=1e-6)
        assert mine["J_c"] == pytest.approx(theirs["J_c"], rel=1e-6)
    expected = load_file(straight.model_dir / "adapter_model.safetensors")
    for name, tensor in load_file(resumed.model_dir / "adapter_model.safetensors").items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


class Huge(Objective):
    """A cost of 1000 per answer: far beyond the ±50 clip."""

    name = "huge"

    def score(self, prompts, responses):
        return np.full(len(responses), 1000.0)


def cost_score_model(model_dir: Path) -> ScoreModelObjective:
    """A random one-label score model on the tiny model's body and tokenizer, as the cost."""
    torch.manual_seed(4)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return ScoreModelObjective(model, "harm", "a cost model", direction=-1, tokenizer=tokenizer, device="cpu")


def test_critics_are_separate_networks_the_cost_one_from_the_cost_model(stopping_model_dir, tmp_path):
    reward = Informativeness()
    reward.stats = NormStats(10.0, 4.0, 8)
    cost = cost_score_model(stopping_model_dir)
    config = lag_config(stopping_model_dir, tmp_path / "c", 1, critic_lr=3e-3)
    trainer = PPOLagTrainer(config, PROMPTS[:4], objectives=[reward], cost_objective=cost)
    actor_critic = trainer.actor_critic
    assert set(actor_critic.critics) == {"reward", "cost"} and not actor_critic.value_heads  # no heads on the actor
    assert actor_critic.critics["cost"].source == "score model of harm"
    assert actor_critic.critics["reward"].source.startswith("base model")
    policy_ids = {id(p) for p in actor_critic.policy.parameters()}
    for critic in actor_critic.critics.values():
        assert policy_ids.isdisjoint(id(p) for p in critic.parameters())
        assert any(p.requires_grad for p in critic.head.parameters())

    ids = torch.tensor([[1, 5, 9, 12, 30, 41, 7]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = token_values(cost.model, ids, mask)[:, 2:6]  # states before the last 4 tokens
        torch.testing.assert_close(actor_critic.critics["cost"](ids, mask, 4), expected)
        assert actor_critic.critics["reward"](ids, mask, 4).abs().max() == 0  # zero head on the base body
    assert not any(p is q for p in cost.model.parameters() for q in actor_critic.critics["cost"].parameters())

    actor, critics = trainer.parameter_groups()
    assert critics["lr"] == 3e-3 and "lr" not in actor
    assert {id(p) for p in actor["params"]} <= policy_ids


def test_value_clip_is_five_and_token_rewards_and_costs_are_clipped_to_fifty(stopping_model_dir, tmp_path):
    assert PPOLagConfig(cost_objective="length_cost", threshold=0.0).value_clip_range == 5.0
    reward = Informativeness()
    reward.stats = NormStats(10.0, 4.0, 8)
    trainer = PPOLagTrainer(lag_config(stopping_model_dir, tmp_path / "clip", 1), PROMPTS[:4], objectives=[reward],
                            cost_objective=Huge())
    mask = torch.tensor([[True, True, True], [True, True, False]])
    zeros = torch.zeros(2, 3)
    experience = Experience(
        sequences=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long),
        action_mask=mask, old_logprobs=zeros, ref_logprobs=zeros, rewards={}, normalized={},
        costs={"huge": torch.tensor([1000.0, 1000.0])}, prompt_index=torch.tensor([0, 1]),
        scalar_reward=torch.tensor([-400.0, 400.0]), values={"reward": zeros, "cost": zeros})
    returns = trainer.add_advantages(experience).returns
    assert returns["cost"][0, 2] == 50.0 and returns["cost"][1, 1] == 50.0
    assert returns["reward"][0, 2] == -50.0 and returns["reward"][1, 1] == 50.0


def test_ptx_adds_a_language_modelling_loss(stopping_model_dir, tmp_path):
    data = tmp_path / "ptx.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}", "response": "The sea is blue."}) + "\n" for i in range(3)))
    config = lag_config(stopping_model_dir, tmp_path / "ptx", 1, ptx_coef=0.5, ptx_dataset=[str(data)])
    result = lag_trainer(config).train()
    assert metric_rows(result.run_dir)[0]["ptx_loss"] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cost-objective", "length_cost"], "needs a finite --threshold for length_cost"),
        (["--threshold", "0"], "needs --cost-objective"),
        (["--cost-objective", "length_cost", "--threshold", "0", "--lambda-init", "9"], "lambda_init"),
        (["--cost-objective", "length_cost", "--threshold", "0", "--ptx-coef", "1"], "--ptx-dataset"),
    ],
)
def test_bad_config_is_a_one_line_error(flags, message):
    with pytest.raises(ConfigError, match=message) as error:
        config_for("ppo-lag", flags)
    assert "\n" not in str(error.value)


def test_cli_refuses_an_unregistered_cost_objective_in_one_line(capsys, tmp_path):
    code = cli_main(["ppo-lag", "--cost-objective", "toxicity", "--threshold", "0", "--output-dir",
                     str(tmp_path / "x"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert "unknown objective 'toxicity'" in error and "\n" not in error
