"""DPO-family trainer on the tiny Llama: π = π_ref at the start, every variant trains, stored references."""

from __future__ import annotations

import json
import math

import pytest
import torch

from paretoalign.training.config import DPOConfig
from paretoalign.training.dpo import DPOTrainer
from paretoalign.training.logprobs import IGNORE_INDEX, response_logprobs


PROMPTS = ["How do I cook rice?", "Why is the sky blue?", "Give me three tips.", "Explain photosynthesis."]
PAIRS = [{"prompt": p, "chosen": "Thank you, happy to help!", "rejected": "Water boils at one hundred degrees Celsius.",
          "margin": 0.5, "margin_chosen": [0.2], "margin_rejected": [0.1],
          "unpref_chosen": "Plants need light.", "unpref_rejected": "Rinse the rice."} for p in PROMPTS]


def dpo_config(model_dir, tmp_path, **overrides) -> DPOConfig:
    values = dict(model=str(model_dir), output_dir=str(tmp_path / "run"), max_steps=8, batch_size=4, lr=1e-2,
                  scheduler="constant", progress=False, beta=0.5)
    return DPOConfig(**{**values, **overrides})


def test_policy_equals_reference_at_start_and_training_lowers_the_loss(tiny_model_dir, tmp_path):
    trainer = DPOTrainer(dpo_config(tiny_model_dir, tmp_path, full_finetune=True, lr=2e-3), PAIRS, PAIRS)
    result = trainer.train()
    first = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1 runs at π = π_ref
    assert result.metrics["eval_loss"] < 0.5 * math.log(2)
    assert result.metrics["eval_accuracy"] == 1.0


def test_sequence_logps_equal_those_of_every_logit(tiny_model_dir, tmp_path):
    """The LM head runs only from the last prompt position on; the sums are those of the full logits."""
    trainer = DPOTrainer(dpo_config(tiny_model_dir, tmp_path), PAIRS)
    batch = trainer.collate(trainer.train_examples)
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = response_logprobs(logits, batch["labels"], batch["labels"] != IGNORE_INDEX)
        logps, counts = trainer.sequence_logps(trainer.model, batch)
    assert torch.allclose(logps, expected[0], atol=1e-5) and torch.equal(counts, expected[1])


def test_stored_reference_equals_adapter_free_reference(tiny_model_dir, tmp_path):
    live = DPOTrainer(dpo_config(tiny_model_dir, tmp_path / "a", max_steps=2), PAIRS)
    stored = DPOTrainer(dpo_config(tiny_model_dir, tmp_path / "b", max_steps=2, precompute_reference=True), PAIRS)
    live.train(), stored.train()
    batch = live.collate(live.train_examples)
    stored_batch = stored.collate(stored.train_examples)
    assert "ref_logps" in stored_batch and "ref_logps" not in batch
    assert torch.allclose(live.reference_logps(batch), stored.reference_logps(stored_batch), atol=1e-5)
    assert not torch.allclose(live.sequence_logps(live.model, batch)[0], live.reference_logps(batch))


@pytest.mark.parametrize("loss", ["dpo_nll", "margin", "adaptive_margin", "ema_margin", "modpo"])
def test_every_variant_trains(tiny_model_dir, tmp_path, loss):
    extra = {"modpo_weights": [0.6, 0.4]} if loss == "modpo" else {}
    trainer = DPOTrainer(dpo_config(tiny_model_dir, tmp_path, loss=loss, max_steps=3, **extra), PAIRS, PAIRS)
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    assert math.isfinite(before) and result.metrics["eval_loss"] < before
    if loss == "ema_margin":
        shadow = trainer.ema.shadow
        live = dict(trainer.unwrapped_model.named_parameters())
        assert any(not torch.equal(value, live[name]) for name, value in shadow.items())


def test_identical_pairs_are_skipped(tiny_model_dir, tmp_path):
    same = {**PAIRS[0], "rejected": PAIRS[0]["chosen"]}
    trainer = DPOTrainer(dpo_config(tiny_model_dir, tmp_path), PAIRS[1:] + [same])
    assert trainer.data_report.skipped == {"identical chosen and rejected": 1}


def test_modpo_margins_from_margin_models_equal_the_objectives_scores(tiny_model_dir, tmp_path):
    from paretoalign.core.errors import ConfigError
    from paretoalign.objectives import load_objectives

    bare = [{key: pair[key] for key in ("prompt", "chosen", "rejected")} for pair in PAIRS]
    settings = dpo_config(tiny_model_dir, tmp_path, loss="modpo", modpo_weights=[0.6, 0.4],
                          margin_models=["conciseness"], max_steps=2)
    trainer = DPOTrainer(settings, bare)
    (conciseness,) = load_objectives("conciseness")
    batch = trainer.collate(trainer.train_examples)
    for side in ("chosen", "rejected"):
        expected = conciseness.direction * torch.tensor(conciseness.score(PROMPTS, [p[side] for p in PAIRS]))
        assert torch.allclose(batch[f"margin_{side}"].squeeze(-1), expected.float())
    assert batch["margin_chosen"][0, 0] > batch["margin_rejected"][0, 0]  # the shorter answer is more concise
    assert trainer.train().steps == 2
    with pytest.raises(ConfigError, match="one per modpo weight after w0"):
        dpo_config(tiny_model_dir, tmp_path, loss="modpo", modpo_weights=[0.6, 0.4],
                   margin_models=["conciseness", "simplicity"])
