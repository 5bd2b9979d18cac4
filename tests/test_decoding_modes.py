"""The decode step's modes (dynamic cache, preallocated static cache, compiled) and the top-k sampler's fast
path give the same tokens as the plain path they replace; the current cache API raises no deprecation."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, MistralConfig, MistralForCausalLM

from paretoalign.core.errors import ConfigError
from paretoalign.generation import CausalLMScorer, GenerationConfig, TokenSampler, generate
from paretoalign.generation import decoding
from paretoalign.generation.beam import beam_search
from paretoalign.generation.chat import pad_left, prompt_token_ids
from paretoalign.generation.decoding import decode_mode, eos_token_ids

PROMPTS = [
    "Hello there",
    "Explain photosynthesis to a child in simple words, and please keep it short.",
    "a",
    "Write a short poem about the sea.",
    "How do I cook rice?",
    "The sky is blue because",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny Llama with larger random weights, so tokens vary with the prompt and rows end at different steps."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


CONFIGS = {
    "top-k/top-p": GenerationConfig(max_new_tokens=24, temperature=0.9, top_k=20, top_p=0.8, batch_size=4),
    "untruncated": GenerationConfig(max_new_tokens=24, temperature=1.3),
    "greedy": GenerationConfig(max_new_tokens=24, do_sample=False, batch_size=3),
    "stop strings": GenerationConfig(max_new_tokens=24, min_new_tokens=2, stop=("e",)),
}


def _in_mode(monkeypatch, mode: str, model, tokenizer, config: GenerationConfig):
    monkeypatch.setenv("PARETOALIGN_DECODE", mode)
    return generate(model, tokenizer, PROMPTS, config)


@pytest.mark.parametrize("name", CONFIGS)
def test_static_cache_decodes_the_same_tokens_as_the_dynamic_cache(model, tokenizer, monkeypatch, name):
    dynamic = _in_mode(monkeypatch, "dynamic", model, tokenizer, CONFIGS[name])
    static = _in_mode(monkeypatch, "static", model, tokenizer, CONFIGS[name])
    assert [r.token_ids for r in static] == [r.token_ids for r in dynamic]
    assert [r.finish_reason for r in static] == [r.finish_reason for r in dynamic]
    for ours, theirs in zip(static, dynamic):
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=1e-5, rtol=0)
    if name == "stop strings":  # rows left the batch at different steps
        assert len({len(r.token_ids) for r in static}) > 1


def test_static_cache_beam_search_equals_dynamic(model, tokenizer):
    """Beam search copies rows (one prefix continued by two beams) in the preallocated cache too."""
    ids, mask = pad_left(prompt_token_ids(tokenizer, PROMPTS), tokenizer.pad_token_id)
    found = {}
    for mode in ("dynamic", "static"):
        scorer = CausalLMScorer(model, max_new_tokens=10, mode=mode)
        assert scorer.mode == mode
        with torch.inference_mode():
            found[mode] = beam_search(scorer, ids, mask, beams=3, max_new_tokens=10,
                                      eos_ids=eos_token_ids(model, tokenizer), num_return=2)
    tokens = {mode: [[candidate.token_ids for candidate in row] for row in rows] for mode, rows in found.items()}
    assert tokens["static"] == tokens["dynamic"]


def test_a_failing_compiler_falls_back_to_the_eager_step(tiny_model_dir, tokenizer, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # its compiler failure is remembered

    def broken(model):
        def step(**kwargs):
            raise RuntimeError("no compiler here")

        return step

    monkeypatch.setattr(decoding, "compiled_call", broken)
    static = _in_mode(monkeypatch, "static", model, tokenizer, CONFIGS["top-k/top-p"])
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        compiled = _in_mode(monkeypatch, "compiled", model, tokenizer, CONFIGS["top-k/top-p"])
    assert [r.token_ids for r in compiled] == [r.token_ids for r in static]
    assert decode_mode(model, "compiled") == "static"  # not tried again for this model


FIXED_SHAPES = GenerationConfig(max_new_tokens=24, min_new_tokens=2, stop=("e",), batch_size=3)
"""Rows stop at different steps; two batches of three rows (the second reuses the first one's cache)."""


def test_compiled_mode_keeps_finished_rows_and_reuses_its_cache(model, tokenizer, monkeypatch):
    """The compiled mode's bookkeeping (fixed shapes, rows renumbered, cache reused), with the eager step."""
    caches = []

    def eager(model):
        def step(**kwargs):
            caches.append((id(kwargs["cache"]), kwargs["input_ids"].shape[0]))
            return model(**kwargs)

        return step

    monkeypatch.setattr(decoding, "compiled_call", eager)
    static = _in_mode(monkeypatch, "static", model, tokenizer, FIXED_SHAPES)
    compiled = _in_mode(monkeypatch, "compiled", model, tokenizer, FIXED_SHAPES)
    assert [r.token_ids for r in compiled] == [r.token_ids for r in static]
    assert len({len(r.token_ids) for r in compiled}) > 1
    assert set(caches) == {(caches[0][0], 3)}  # one cache, one shape for every step of both batches


@pytest.mark.slow
def test_compiled_step_decodes_the_same_tokens(tiny_model_dir, tokenizer, monkeypatch):
    """torch.compile of the one-token step (about a minute to build on a CPU)."""
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    static = _in_mode(monkeypatch, "static", fresh, tokenizer, FIXED_SHAPES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        compiled = _in_mode(monkeypatch, "compiled", fresh, tokenizer, FIXED_SHAPES)
    assert [r.token_ids for r in compiled] == [r.token_ids for r in static]


def test_decode_mode_fits_the_model_and_the_caller(model):
    assert decode_mode(model) == "static"  # CPU: preallocated cache, no compiler
    assert decode_mode(model, "compiled", compilable=False) == "static"  # extra forward arguments (PEFT routing)
    assert decode_mode(model, "static", length_known=False) == "dynamic"
    sliding = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                               sliding_window=4))
    assert decode_mode(sliding, "static") == "dynamic"
    with pytest.raises(ConfigError, match="unknown decode mode"):
        decode_mode(model, "fast")


def test_decoding_passes_no_deprecated_argument(model, tokenizer, monkeypatch):
    for mode in ("dynamic", "static"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            _in_mode(monkeypatch, mode, model, tokenizer, CONFIGS["greedy"])


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 50, 0.9), (1.0, 20, 1.0), (1.3, 5, 0.5), (0.8, 1, 0.9)])
def test_top_k_fast_path_draws_what_the_whole_vocabulary_warpers_draw(temperature, top_k, top_p):
    rows, vocab = 512, 3000
    config = GenerationConfig(max_new_tokens=3, temperature=temperature, top_k=top_k, top_p=top_p)
    fast = TokenSampler(config, range(rows), torch.device("cpu"))
    whole = TokenSampler(config, range(rows), torch.device("cpu"))
    whole.top_k = 0  # transformers' warpers over the whole vocabulary
    torch.manual_seed(0)
    for step in range(3):
        scores = torch.randn(rows, vocab) * (1 + 3 * torch.rand(rows, 1))
        if step == 2:
            scores = scores.round(decimals=1)  # ties at the k-th score: the whole-vocabulary path
        tokens, logprobs = fast(scores, list(range(rows)))
        expected_tokens, expected_logprobs = whole(scores, list(range(rows)))
        assert torch.equal(tokens, expected_tokens)
        torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-5, rtol=0)
