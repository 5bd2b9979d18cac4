"""Training layer: configs, the shared loop, SFT (tiny real Llama from conftest, a few steps each)."""

from __future__ import annotations

import json

import pytest
import torch

from paretoalign.core.errors import ConfigError, DataError
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.training.config import DPOConfig, SFTConfig, load_config, parse_config
from paretoalign.training.logprobs import IGNORE_INDEX, response_logits
from paretoalign.training.sft import SFTTrainer, pack_examples


SFT_DATA = [{"prompt": f"Question {i}: what color is the sky?", "response": "The sky is blue."} for i in range(8)]


def sft_config(model_dir, tmp_path, **overrides) -> SFTConfig:
    values = dict(model=str(model_dir), output_dir=str(tmp_path / "run"), max_steps=6, batch_size=4, lr=3e-2,
                  scheduler="constant", progress=False, seed=0)
    values.update(overrides)
    return SFTConfig(**values)


# ---------------------------------------------------------------- config


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 2.0e-4\nbatch-size: 2\nlora_targets: [q_proj, v_proj]\npacking: true\n")
    config = parse_config(SFTConfig, ["--config", str(path), "--lr", "1e-5", "--no-packing", "--max-steps", "3"])
    assert config.lr == 1e-5 and config.batch_size == 2 and config.max_steps == 3
    assert config.lora_targets == ["q_proj", "v_proj"] and config.packing is False
    dpo = parse_config(DPOConfig, ["--loss", "modpo", "--modpo-weights", "0.6", "0.4"])
    assert dpo.modpo_weights == [0.6, 0.4]


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="'learning_rate'"):
        load_config(SFTConfig, path)
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        load_config(SFTConfig, batch_size="many")
    with pytest.raises(ConfigError, match="loss 'ipo' is not one of"):
        DPOConfig(loss="ipo")


# ---------------------------------------------------------------- SFT


def test_prompt_tokens_are_masked_exactly(tiny_model_dir, tmp_path):
    trainer = SFTTrainer(sft_config(tiny_model_dir, tmp_path), SFT_DATA[:2])
    example = trainer.train_examples[0]
    prompt_ids = prompt_token_ids(trainer.tokenizer, [SFT_DATA[0]["prompt"]])[0]
    masked = [i for i, label in enumerate(example["labels"]) if label == IGNORE_INDEX]
    assert masked == list(range(len(prompt_ids)))
    assert example["input_ids"][: len(prompt_ids)] == prompt_ids
    response = trainer.tokenizer.decode(example["labels"][len(prompt_ids):])
    assert response.startswith("The sky is blue.<|im_end|>")


def test_prompt_transform_conditions_the_prompt(tiny_model_dir, tmp_path):
    trainer = SFTTrainer(sft_config(tiny_model_dir, tmp_path), SFT_DATA[:1],
                         prompt_transform=lambda record: "<simplicity> 0.5 " + record["prompt"])
    text = trainer.tokenizer.decode(trainer.train_examples[0]["input_ids"])
    assert "<simplicity> 0.5 Question 0" in text


def test_sft_loss_decreases_and_writes_run_dir(tiny_model_dir, tmp_path):
    config = sft_config(tiny_model_dir, tmp_path, eval_every=3, lr=1e-2, full_finetune=True)
    trainer = SFTTrainer(config, SFT_DATA, SFT_DATA[:2])
    result = trainer.train()
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.0
    assert any("eval_loss" in line for line in lines)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["method"] == "sft" and manifest["steps"] == 6 and manifest["seed"] == 0
    assert manifest["trained_tokens"] == result.trained_tokens > 0
    assert manifest["artifacts"]["model"] == {"path": "model", "kind": "full"}
    assert (result.model_dir / "model.safetensors").is_file()


def test_packing_keeps_examples_apart(tiny_model_dir, tmp_path):
    config = sft_config(tiny_model_dir, tmp_path, packing=True, max_length=200)
    trainer = SFTTrainer(config, SFT_DATA[:4])
    rows = trainer.train_examples
    assert len(rows) < 4 and sum(len(r["input_ids"]) for r in rows) == sum(
        len(e["input_ids"]) for e in SFTTrainer(sft_config(tiny_model_dir, tmp_path), SFT_DATA[:4]).train_examples)
    # a packed row scores each example exactly as it would alone (block-diagonal attention)
    model = trainer.model.eval()
    single = trainer.train_examples[0]
    alone = pack_examples([{"input_ids": single["input_ids"][:40], "labels": single["labels"][:40]}], 200)
    batch = trainer.collate(rows[:1])
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0, :40]
        alone_logits = model(input_ids=torch.tensor([alone[0]["input_ids"]])).logits[0]
    assert torch.allclose(packed_logits, alone_logits, atol=1e-5)
    second = rows[0]["position_ids"].index(0, 1)
    with torch.no_grad():
        tail = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0, second:second + 10]
        fresh = model(input_ids=torch.tensor([rows[0]["input_ids"][second:second + 10]])).logits[0]
    assert torch.allclose(tail, fresh, atol=1e-5)


@pytest.mark.parametrize("packing", [False, True])
def test_sft_loss_on_response_logits_equals_the_models_own_loss(tiny_model_dir, tmp_path, packing):
    """The LM head runs only from the last prompt position on; the loss is the one HF computes over every logit."""
    data = [{"prompt": "Hi" + " there" * i, "response": "Fine, thanks" + " a lot" * (3 - i)} for i in range(4)]
    trainer = SFTTrainer(sft_config(tiny_model_dir, tmp_path, packing=packing, max_length=160), data)
    batch = trainer.collate(trainer.train_examples[:4])
    with torch.no_grad():
        expected = trainer.model(**batch, use_cache=False).loss
        loss, _ = trainer.compute_loss(batch)
        logits, labels = response_logits(trainer.model, batch["labels"], input_ids=batch["input_ids"])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert logits.shape[1] == labels.shape[1] < batch["labels"].shape[1]  # the prompt's logits were not computed


def test_bad_sft_input(tiny_model_dir, tmp_path):
    config = sft_config(tiny_model_dir, tmp_path, max_length=70)
    with pytest.raises(DataError, match="misses column"):
        SFTTrainer(config, [{"question": "hi", "response": "hello"}])
    long = [{"prompt": "hi", "response": "The sky is blue. " * 30}, {"prompt": "x " * 100, "response": "ok"}]
    trainer = SFTTrainer(config, long)
    assert trainer.data_report.truncated == 1
    assert trainer.data_report.skipped == {"no response tokens within max_length": 1}
    assert all(len(e["input_ids"]) <= 70 for e in trainer.train_examples)


def test_two_runs_in_one_process_with_different_precision(tiny_model_dir, tmp_path):
    """Recipes (RiC, soups) train several models in one process; the second run must get its own precision."""
    from paretoalign.training import run_training

    first = run_training("sft", sft_config(tiny_model_dir, tmp_path / "a", max_steps=1, mixed_precision="no"),
                         train_data=SFT_DATA)
    second = run_training("sft", sft_config(tiny_model_dir, tmp_path / "b", max_steps=1, mixed_precision="bf16"),
                          train_data=SFT_DATA)
    assert first.steps == second.steps == 1
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["config"]["mixed_precision"] == "bf16"
    assert manifest["artifacts"]["model"]["kind"] == "adapter"


def test_group_by_length_batches_similar_lengths_and_keeps_every_example(tiny_model_dir, tmp_path):
    data = [{"prompt": f"Question {i}?", "response": "word " * (1 + (7 * i) % 23)} for i in range(21)]
    plain = SFTTrainer(sft_config(tiny_model_dir, tmp_path, batch_size=4), data)
    grouped = SFTTrainer(sft_config(tiny_model_dir, tmp_path, batch_size=4, group_by_length=True), data)

    def padding(trainer, order):
        lengths = [len(trainer.train_examples[i]["input_ids"]) for i in order]
        return sum(max(lengths[s:s + 4]) * len(lengths[s:s + 4]) - sum(lengths[s:s + 4]) for s in range(0, 20, 4))

    for epoch in range(2):
        order, plain_order = grouped._epoch_order(epoch), plain._epoch_order(epoch)
        assert sorted(order[:21]) == list(range(21)) and len(order) == 24  # every example, wrapped to full batches
        assert padding(grouped, order) < padding(plain, plain_order) / 3
    assert grouped._epoch_order(0)[:20] != grouped._epoch_order(1)[:20]  # batches still come in random order
