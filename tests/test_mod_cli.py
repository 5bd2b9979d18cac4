"""``paretoalign mod decode``: adapters or models per objective, beams, and one-line errors (exit 2)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tiny import make_tiny_llama

from paretoalign.generation import GenerationConfig, generate
from paretoalign.interfaces.cli import main
from paretoalign.models import load_model
from paretoalign.models.lora import attach_lora, save_adapter


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
    """Two saved LoRA adapters (random non-zero B) trained, so to speak, on the tiny base."""
    folder = tmp_path_factory.mktemp("mod-adapters")
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "first", r=2)
    attach_lora(model, "second", r=2)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    return [save_adapter(model, name, folder / name) for name in ("first", "second")]


def decode(*flags: str) -> list[str]:
    """argv of ``mod decode`` for one prompt and 4 tokens, plus ``flags`` (later flags win)."""
    return ["mod", "decode", "--prompt", "Hello there", "--max-new-tokens", "4", "--dtype", "float32", *flags]


def test_decode_with_adapters_and_with_beams(tiny_model_dir, adapter_dirs, capsys):
    adapters = f"simplicity={adapter_dirs[0]},friendliness={adapter_dirs[1]}"
    flags = ["--model", str(tiny_model_dir), "--adapters", adapters, "--preference", "simplicity=0.3,friendliness=0.7"]
    assert main(decode(*flags, "--prompt", "How do I cook rice?")) == 0
    sampled = capsys.readouterr().out
    assert sampled.count("\n\n") == 1 and sampled.strip()
    assert main(decode(*flags, "--beams", "2", "--divergence", "forward_kl")) == 0
    assert capsys.readouterr().out.strip()


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tmp_path_factory):
    """Two saved tiny models with larger random weights (the default scale answers every prompt alike)."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(f"mod-model-{seed}")
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def test_decode_with_models_and_all_weight_on_one_is_that_model(model_dirs, capsys):
    models = f"simplicity={model_dirs[0]},friendliness={model_dirs[1]}"
    prompts = ["Hello there", "Write a short poem about the sea."]
    flags = ["--models", models, "--temperature", "0", "--prompt", prompts[1], "--max-new-tokens", "6"]
    assert main(decode(*flags, "--preference", "friendliness=1")) == 0
    model, tokenizer = load_model(str(model_dirs[1]), dtype="float32")
    expected = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=6, do_sample=False))
    assert all(r.text.strip() for r in expected) and expected[0].text != expected[1].text
    assert capsys.readouterr().out == "\n\n".join(r.text for r in expected) + "\n"
    assert main(decode(*flags, "--preference", "simplicity=0.5,friendliness=0.5", "--divergence", "alpha")) == 0


def test_mod_help_lists_decode(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mod", "decode", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--adapters" in out and "--divergence" in out and "--beams" in out


def test_bad_input_ends_in_one_line(tiny_model_dir, adapter_dirs, tmp_path, capsys):
    other = make_tiny_llama(tmp_path / "other", seed=2, vocab_size=300)
    capsys.readouterr()  # saving the model above printed a progress bar
    adapters = f"simplicity={adapter_dirs[0]},friendliness={adapter_dirs[1]}"
    cases = {
        "is not OBJECTIVE=PATH": ["--adapters", "simplicity", "--preference", "simplicity=1"],
        "unknown objective 'relevance'": ["--adapters", adapters, "--preference", "relevance=1"],
        "has no adapter_model.safetensors": ["--model", str(tiny_model_dir), "--adapters", f"simplicity={tmp_path}",
                                            "--preference", "simplicity=1"],
        "different tokenizers": ["--models", f"simplicity={tiny_model_dir},friendliness={other}",
                                 "--preference", "simplicity=0.5,friendliness=0.5"],
        "--beams must be >= 1": ["--adapters", adapters, "--preference", "simplicity=1", "--beams", "0"],
    }
    for message, flags in cases.items():
        assert main(decode(*flags)) == 2, message
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after any weight-loading progress bars
        assert last.startswith("paretoalign: error:") and message in last
