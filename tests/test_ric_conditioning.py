"""scripts/ric_conditioning.py on the tiny Llama: a model trained where the targets decide the answer reads them
(its own targets make each response likelier; the untrained model gains next to nothing), and the samples' spread
by instruction is the objectives' own scores of each group."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from paretoalign.data import ScoredResponse
from paretoalign.methods.ric import Conditioning, RiCPolicy
from paretoalign.methods.ric.stages import conditioned_prompt_transform
from paretoalign.objectives import load_objectives
from paretoalign.training import SFTConfig, SFTTrainer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ric_conditioning.py"
SHORT, LONG = "Yes.", "Yes, it is, and here is why it is so."


def load_script():
    spec = importlib.util.spec_from_file_location("ric_conditioning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = [ScoredResponse(prompt=f"Question {i}?", response=text,
                          meta={"rewards": {"informativeness": value, "conciseness": -value}})
           for i in range(7) for text, value in ((SHORT, -1.0), (LONG, 1.0))]


@pytest.fixture(scope="module")
def conditioned(tiny_model_dir, tmp_path_factory):
    """The tiny model fine-tuned on RECORDS with their targets in the prompt (the targets decide the answer), as a
    RiC policy, and the untouched model."""
    conditioning = Conditioning()
    rows = [{"prompt": r.prompt, "response": r.response, "rewards": r.meta["rewards"]} for r in RECORDS]
    config = SFTConfig(model=str(tiny_model_dir), output_dir=str(tmp_path_factory.mktemp("sft") / "run"),
                       full_finetune=True, lr=1e-2, max_steps=60, batch_size=14, scheduler="constant", progress=False)
    trainer = SFTTrainer(config, rows, prompt_transform=conditioned_prompt_transform(
        conditioning, ["informativeness", "conciseness"]))
    trainer.train()
    target_range = {"informativeness": (-1.0, 1.0), "conciseness": (-1.0, 1.0)}
    policy = RiCPolicy(trainer.model.eval(), trainer.tokenizer, target_range, conditioning=conditioning)
    return policy, AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_a_model_trained_on_deciding_targets_reads_them(conditioned):
    script = load_script()
    policy, untouched = conditioned
    trained = script.conditioning_gain(policy, RECORDS, policy.model)
    base = script.conditioning_gain(policy, RECORDS, untouched)
    assert trained.shape == (14,) and trained.min() > 2.0  # every answer likelier with the targets it came with
    assert abs(base.mean()) < 1.0  # a model never shown targets gains next to nothing from them


def test_spread_by_instruction_is_each_groups_own_scores():
    script = load_script()
    objectives = load_objectives("informativeness")
    samples = [ScoredResponse(prompt="Q", response=text, meta={"steered_by": by})
               for text, by in [("a b", None), ("a b c d", None), ("a", "simplicity"),
                                ("a b c d e f", "informativeness")]]
    spread = script.spread_by_instruction(samples, objectives)
    assert spread == {"plain": {"informativeness": (3.0, 1.0)}, "simplicity": {"informativeness": (1.0, 0.0)},
                      "informativeness": {"informativeness": (6.0, 0.0)}}
