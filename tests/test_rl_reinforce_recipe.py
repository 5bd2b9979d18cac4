"""The HC-RLHF recipe reads reinforce-lag runs back: a passing run serves its adapter (π_ref = the base), a run
with no solution is refused unless asked for, and train_for_demo trains once and reloads afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError, TrainingError
from paretoalign.core.rundir import RunDirectory
from paretoalign.generation import GenerationConfig
from paretoalign.methods.hc_rlhf import HCBudget, HCRLHFPolicy, load_policy, resolve_budget, safety_report, train_for_demo
from paretoalign.objectives import load_objectives
from paretoalign.training.rl.high_confidence import NO_SOLUTION
from paretoalign.training.rl.reinforce import ReinforceLagConfig
from paretoalign.training.runner import run_training

PROMPTS = [{"prompt": f"Tell me something about topic number {i}."} for i in range(12)]


def train(model_dir: Path, out: Path, threshold: float) -> Path:
    config = ReinforceLagConfig(
        model=str(model_dir), objectives="conciseness", cost_objective="length_cost?budget=2", threshold=threshold,
        batch_size=2, samples_per_prompt=3, max_new_tokens=8, max_steps=2, safety_prompts=4, norm_prompts=4,
        output_dir=str(out), progress=False, lr=1e-2, lora_r=4, lora_alpha=8,
    )
    return run_training("reinforce-lag", config, train_data=PROMPTS).run_dir


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hc-runs")
    return {"safe": train(tiny_model_dir, root / "safe", threshold=10.0),
            "unsafe": train(tiny_model_dir, root / "unsafe", threshold=-1.0)}


def test_a_passing_run_serves_its_adapter_with_the_base_as_reference(runs, tiny_model_dir):
    policy = load_policy(runs["safe"], dtype="float32", device="cpu")
    assert isinstance(policy, HCRLHFPolicy) and policy.name == "hc_rlhf" and policy.safety.passed
    assert policy.training_cost["trained_tokens"] > 0 and policy.training_cost["generated_tokens"] > 0
    ids = torch.tensor([[1, 5, 9, 12, 30]])
    reference, _ = policy.reference()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, base(input_ids=ids).logits)
        assert not torch.allclose(policy.model(input_ids=ids).logits, base(input_ids=ids).logits)
    responses = policy.generate(["Say hi."], None, GenerationConfig(max_new_tokens=4))
    assert len(responses) == 1 and len(responses[0].token_ids) <= 4


def test_a_run_with_no_solution_is_refused_unless_allowed(runs):
    assert safety_report(runs["unsafe"]).verdict == NO_SOLUTION
    with pytest.raises(ConfigError, match=NO_SOLUTION) as caught:
        load_policy(runs["unsafe"], dtype="float32", device="cpu")
    assert "\n" not in str(caught.value)
    assert not load_policy(runs["unsafe"], allow_unsafe=True, dtype="float32", device="cpu").safety.passed


def test_other_run_directories_are_rejected(tmp_path):
    RunDirectory.create(tmp_path / "sft", method="sft")
    with pytest.raises(ConfigError, match="not a finished reinforce-lag run"):
        safety_report(tmp_path / "sft")


def test_train_for_demo_trains_once_then_reloads(tiny_model_dir, tmp_path):
    objectives = load_objectives("conciseness")
    small = HCBudget(prompts=12, steps=2, prompts_per_step=2, samples=2, max_new_tokens=6, safety_prompts=4, lr=1e-2)
    options = dict(budget=small, model=str(tiny_model_dir), progress=False)
    workdir = tmp_path / "demo"
    policy = train_for_demo(objectives, workdir, threshold=1000.0, **options)
    assert policy.safety.passed and policy.safety.n == 4 and (workdir / "model").is_dir()
    assert RunDirectory.open(workdir).manifest["steps"] == 2
    stamp = (workdir / "manifest.json").stat().st_mtime_ns
    again = train_for_demo(objectives, workdir, threshold=1000.0, **options)
    assert (workdir / "manifest.json").stat().st_mtime_ns == stamp and again.safety == policy.safety
    with pytest.raises(ConfigError, match=r"another threshold \(1000\.0, not 5\.0\)"):
        train_for_demo(objectives, workdir, threshold=5.0, **options)
    with pytest.raises(TrainingError, match=NO_SOLUTION):
        train_for_demo(objectives, tmp_path / "strict", threshold=-1.0, **options)


def test_budget_presets_and_unknown_budget():
    assert resolve_budget("full").steps > resolve_budget("quick").steps
    with pytest.raises(ConfigError, match="unknown budget 'huge'"):
        resolve_budget("huge")
