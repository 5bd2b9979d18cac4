"""The hc_rlhf recipe on the tiny model: one reinforce-lag stage whose safety verdict is in the manifest; a passing
run loads (π_ref = the base), a run with no solution is refused in one line unless the library is asked to
allow it; the settings reach the trainer with the original's defaults."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.data import load_prompts
from paretoalign.generation import GenerationConfig
from paretoalign.methods import get_recipe, load_run
from paretoalign.methods.hc_rlhf import load_policy, safety_report
from paretoalign.training.rl.high_confidence import NO_SOLUTION

from test_recipes import tiny_config

OBJECTIVES = "conciseness,simplicity"


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root, recipe = tmp_path_factory.mktemp("hc"), get_recipe("hc_rlhf")
    return {"safe": recipe.fit(OBJECTIVES, root / "safe", tiny_config("hc_rlhf", tiny_model_dir)),
            "unsafe": recipe.fit(OBJECTIVES, root / "unsafe", tiny_config("hc_rlhf", tiny_model_dir, threshold=-1.0,
                                                                          baseline="none"))}


def trained(run) -> dict:
    return json.loads((run.path / "policy" / "manifest.json").read_text())


def test_a_passing_run_serves_its_adapter_with_the_base_as_reference(runs, tiny_model_dir):
    run = runs["safe"]
    assert run.manifest["stages"]["train"]["verdict"] == "pass" and safety_report(run.path).passed
    policy = get_recipe("hc_rlhf").load(run.path, device="cpu", dtype="float32")
    assert policy.name == "hc_rlhf" and policy.safety.passed and policy.training_cost == run.compute
    ids = torch.tensor([[1, 5, 9, 12, 30]])
    reference, _ = policy.reference()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, base(input_ids=ids).logits)
        assert not torch.allclose(policy.model(input_ids=ids).logits, base(input_ids=ids).logits)
    answers = policy.generate(["Say hi."], Preference.parse("conciseness=1"), GenerationConfig(max_new_tokens=4))
    assert len(answers) == 1 and len(answers[0].token_ids) <= 4


def test_a_run_with_no_solution_finishes_but_is_refused_in_one_line_unless_allowed(runs):
    run = runs["unsafe"]
    assert run.finished and run.manifest["safety_test"]["verdict"] == NO_SOLUTION
    for load in (lambda: get_recipe("hc_rlhf").load(run.path), lambda: load_run(run.path)):
        with pytest.raises(ConfigError, match=f"found no solution: safety test {NO_SOLUTION}: UCB") as caught:
            load()
        assert "\n" not in str(caught.value) and "allow_unsafe=True" in str(caught.value)
    policy = load_policy(run.path, allow_unsafe=True, device="cpu", dtype="float32")
    assert not policy.safety.passed and policy.training_cost == run.compute


def test_settings_reach_the_trainer_with_the_originals_defaults(runs):
    safe, unsafe = trained(runs["safe"]), trained(runs["unsafe"])
    assert (safe["config"]["c2"], safe["config"]["lambda_max"], safe["config"]["baseline"]) == (1.0, None, "rloo")
    assert unsafe["config"]["baseline"] == "none" and unsafe["constraint"]["threshold"] == -1.0
    assert safe["constraint"]["safety_prompts"] == 3 and safe["config"]["safety_dataset"] == ["instructions"]
    held_out = {record.prompt for record in load_prompts("instructions", "eval")}
    assert not held_out & {record.prompt for record in load_prompts("instructions", "train")}


def test_load_refuses_other_runs(runs, tmp_path):
    with pytest.raises(ConfigError, match="is a 'hc_rlhf' run, not a 'morlhf' one"):
        get_recipe("morlhf").load(runs["safe"].path)
    with pytest.raises(ConfigError, match="is not a paretoalign run directory"):
        safety_report(tmp_path)
