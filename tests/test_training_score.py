"""Score-model trainers on the tiny Llama: reward accuracy rises, cost signs, value regression, objective."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paretoalign.core.errors import DataError
from paretoalign.training.config import CostModelConfig, RewardModelConfig, ValueModelConfig
from paretoalign.training.score import CostModelTrainer, RewardModelTrainer, ValueModelTrainer, as_objective


FRIENDLY = ["I am happy to help you! Thank you for asking.", "This is a great and friendly question, thank you!"]
PLAIN = ["Water boils at one hundred degrees.", "Rinse the rice and simmer for twenty minutes."]
PROMPTS = ["How do I cook rice?", "Why is the sky blue?", "Give me three tips.", "Explain photosynthesis."]
PAIRS = [{"prompt": p, "chosen": FRIENDLY[i % 2], "rejected": PLAIN[(i + j) % 2]}
         for i, p in enumerate(PROMPTS) for j in range(2)]


def config(cls, model_dir, tmp_path, **overrides):
    values = dict(model=str(model_dir), output_dir=str(tmp_path / "run"), max_steps=12, batch_size=4, lr=1e-2,
                  scheduler="constant", full_finetune=True, progress=False)
    return cls(**{**values, **overrides})


def test_reward_model_learns_separable_pairs_and_becomes_an_objective(tiny_model_dir, tmp_path):
    trainer = RewardModelTrainer(config(RewardModelConfig, tiny_model_dir, tmp_path), PAIRS, PAIRS)
    before = trainer.evaluate()["eval_accuracy"]
    result = trainer.train()
    assert result.metrics["eval_accuracy"] == 1.0 > before
    objective = as_objective(result.model_dir, "friendly_rm")
    scores = objective.score(["How do I cook rice?"] * 2, [FRIENDLY[0], PLAIN[0]])
    assert scores[0] > scores[1]


def test_identical_pairs_are_counted_and_skipped(tiny_model_dir, tmp_path):
    same = {"prompt": "hi", "chosen": "hello", "rejected": "hello"}
    trainer = RewardModelTrainer(config(RewardModelConfig, tiny_model_dir, tmp_path), PAIRS[:2] + [same])
    assert trainer.data_report.skipped == {"identical responses in a pair": 1}
    assert trainer.data_report.examples == 2
    with pytest.raises(DataError, match="misses column.*rejected"):
        RewardModelTrainer(config(RewardModelConfig, tiny_model_dir, tmp_path), [{"prompt": "a", "chosen": "b"}])


def test_cost_model_reports_sign_accuracy(tiny_model_dir, tmp_path):
    safety = [{"prompt": p, "response_0": FRIENDLY[i % 2], "response_1": PLAIN[i % 2], "better": 0, "safer": 0,
               "is_safe_0": True, "is_safe_1": i % 2 == 0} for i, p in enumerate(PROMPTS)]
    trainer = CostModelTrainer(config(CostModelConfig, tiny_model_dir, tmp_path), safety, safety)
    result = trainer.train()
    assert result.metrics["eval_sign_accuracy"] >= 0.75 and result.metrics["eval_accuracy"] == 1.0


def test_value_model_regresses_targets(tiny_model_dir, tmp_path):
    rows = [{"prompt": p, "response": r, "target": t}
            for p in PROMPTS for r, t in ((FRIENDLY[0], 1.0), (PLAIN[0], -1.0))]
    trainer = ValueModelTrainer(config(ValueModelConfig, tiny_model_dir, tmp_path), rows, rows)
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    assert result.metrics["eval_loss"] < 0.5 * before
    assert np.isfinite(result.metrics["eval_mean_abs_error"])


def test_lora_score_model_is_saved_merged_and_scores_the_same(tiny_model_dir, tmp_path):
    lora = config(RewardModelConfig, tiny_model_dir, tmp_path, full_finetune=False, lr=5e-2, max_steps=3)
    trainer = RewardModelTrainer(lora, PAIRS[:1])
    result = trainer.train()
    with torch.no_grad():
        chosen, rejected = trainer.scores(trainer.collate(trainer.train_examples))
    assert not (result.model_dir / "adapter_config.json").exists()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["artifacts"]["model"]["kind"] == "full"
    objective = as_objective(result.model_dir, "friendly_rm", dtype="float32")
    from_objective = objective.score([PAIRS[0]["prompt"]] * 2, [PAIRS[0]["chosen"], PAIRS[0]["rejected"]])
    assert np.allclose(from_objective, [chosen.item(), rejected.item()], atol=1e-5)


def test_bt_cost_loss_needs_no_safety_labels_and_equals_bradley_terry_on_costs(tiny_model_dir, tmp_path):
    from paretoalign.core.errors import ConfigError
    from paretoalign.training.losses import bradley_terry_loss

    unlabelled = [{"prompt": p, "response_0": FRIENDLY[i % 2], "response_1": PLAIN[i % 2], "safer": i % 2}
                  for i, p in enumerate(PROMPTS)]
    settings = config(CostModelConfig, tiny_model_dir, tmp_path, loss="bt")
    with pytest.raises(DataError, match="is_safe_0"):
        CostModelTrainer(config(CostModelConfig, tiny_model_dir, tmp_path), unlabelled)
    trainer = CostModelTrainer(settings, unlabelled, unlabelled)
    batch = trainer.collate(trainer.train_examples)
    loss, _ = trainer.compute_loss(batch)
    safer, unsafer = trainer.scores(batch)
    assert torch.allclose(loss, bradley_terry_loss(unsafer, safer, settings.regularization).loss)
    assert trainer.train().metrics["eval_accuracy"] == 1.0
    with pytest.raises(ConfigError, match="loss 'sequence' is not one of signed, bt"):
        config(CostModelConfig, tiny_model_dir, tmp_path, loss="sequence")
