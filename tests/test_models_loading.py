"""Loading causal LMs and tokenizers from folders and hub ids, with one-line errors for bad specs."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ModelLoadError
from paretoalign.models import load_model, load_tokenizer, prepare_tokenizer, resolve_model_spec


def _logits(model, tokenizer, text):
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_folder_loads_in_eval_mode_with_the_requested_dtype(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, dtype="float32", device="cpu")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    text = "Plants need light and water."
    assert torch.equal(_logits(model, tokenizer, text), _logits(reference, tokenizer, text))
    bf16_model, _ = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert bf16_model.dtype == torch.bfloat16


def test_tokenizer_pads_left_so_batched_greedy_generation_matches_single(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, dtype="float32", device="cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    prompts = ["The sky is blue because air scatters", "Rinse"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    batched = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, prompt in enumerate(prompts):
        single_in = tokenizer(prompt, return_tensors="pt")
        single = model.generate(**single_in, max_new_tokens=6, do_sample=False)[0, single_in["input_ids"].shape[1] :]
        assert torch.equal(batched[row], single)


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    assert tokenizer.pad_token is None
    prepared = prepare_tokenizer(tokenizer)
    assert prepared.pad_token == prepared.eos_token == "<|im_end|>"


def test_load_tokenizer_keeps_the_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_resolve_model_spec_gives_absolute_folders_and_keeps_hub_ids(tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    assert resolve_model_spec(tiny_model_dir.name) == str(tiny_model_dir.resolve())
    assert resolve_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_local_path_names_what_to_give():
    with pytest.raises(ModelLoadError) as err:
        load_model("/no/such/model-folder")
    assert str(err.value) == (
        "model path '/no/such/model-folder' does not exist; give a folder with config.json, a .gguf file, or a hub id"
    )
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("missing-file.gguf")


def test_hub_id_not_in_the_offline_cache_is_one_clean_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as err:
        load_model("someone/model-that-is-not-cached")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot load model 'someone/model-that-is-not-cached'")
    assert "download it while online" in message


def test_folder_with_only_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        load_model(folder)


def test_corrupt_safetensors_is_a_one_line_load_error(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "corrupt")
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match=r"cannot load model '.*corrupt'.*save_pretrained") as raised:
        load_model(folder)
    assert "\n" not in str(raised.value)


def test_adapter_folder_and_plain_files_are_refused_with_a_hint(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="is a LoRA adapter"):
        load_model(adapter)
    text_file = tmp_path / "weights.txt"
    text_file.write_text("x")
    with pytest.raises(ModelLoadError, match="is not a .gguf file"):
        load_model(text_file)
