"""Per-row LoRA-delta mixing against the merged model (``merge_lora_deltas``) on a tiny real Llama."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.generation import CausalLMScorer, GenerationConfig, TokenSampler, decode_loop, eos_token_ids, generate
from paretoalign.generation.chat import pad_id, pad_left, prompt_token_ids
from paretoalign.models import attach_lora, merge_lora_deltas, set_active_adapter
from paretoalign.models.mixing import mix_lora_rows

ADAPTERS = ["obj_a", "obj_b"]
WEIGHTS = [[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]]
PROMPTS = ["Write a short poem about the sea.", "Hi", "Give me three tips for better sleep tonight."]


@pytest.fixture(scope="module")
def soup(tiny_model_dir):
    """A tiny Llama with two trained-looking LoRA adapters of different rank and alpha (random A and B)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = attach_lora(model, ADAPTERS[0], r=4, alpha=8)
    model = attach_lora(model, ADAPTERS[1], r=2, alpha=6)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval(), tokenizer


def _batch(tokenizer):
    ids = prompt_token_ids(tokenizer, PROMPTS)
    return pad_left(ids, pad_id(tokenizer))


def _logits(model, input_ids, attention_mask):
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits


def test_each_row_equals_the_model_merged_for_its_weights(soup):
    model, tokenizer = soup
    input_ids, attention_mask = _batch(tokenizer)
    with torch.no_grad():
        with mix_lora_rows(model, ADAPTERS, WEIGHTS):
            mixed = _logits(model, input_ids, attention_mask)
        for row, weights in enumerate(WEIGHTS):
            merge_lora_deltas(model, ADAPTERS, weights)
            merged = _logits(model, input_ids, attention_mask)[row]
            valid = attention_mask[row].bool()
            torch.testing.assert_close(mixed[row][valid], merged[valid], rtol=1e-4, atol=1e-5)
    set_active_adapter(model, ADAPTERS[0])


def test_mixing_restores_the_active_adapter_and_changes_nothing_after(soup):
    model, tokenizer = soup
    set_active_adapter(model, ADAPTERS[1])
    input_ids, attention_mask = _batch(tokenizer)
    with torch.no_grad():
        before = _logits(model, input_ids, attention_mask)
        with mix_lora_rows(model, ADAPTERS, WEIGHTS):
            pass
        after = _logits(model, input_ids, attention_mask)
    assert torch.equal(before, after)
    assert model.active_adapter == ADAPTERS[1]


class _MixedScorer(CausalLMScorer):
    """The KV-cache scorer with the mixing weights kept in step when rows leave the batch."""

    def __init__(self, model, mixing):
        super().__init__(model)
        self.mixing = mixing

    def keep_rows(self, rows):
        super().keep_rows(rows)
        self.mixing.keep_rows(rows)


def test_decoding_with_rows_leaving_matches_each_merged_model_alone(soup):
    model, tokenizer = soup
    config = GenerationConfig(max_new_tokens=8, do_sample=False)
    eos = eos_token_ids(model, tokenizer)
    sampler = TokenSampler(config, [0] * len(PROMPTS), model.device, eos)

    def choose(scores, rows):  # row 0 ends after two tokens, so the batch shrinks mid-decode
        tokens, logprobs = sampler(scores, rows)
        if sampler.step == 2 and 0 in rows:
            tokens[list(rows).index(0)] = min(eos)
        return tokens, logprobs

    input_ids, attention_mask = _batch(tokenizer)
    with torch.no_grad(), mix_lora_rows(model, ADAPTERS, WEIGHTS) as mixing:
        decoded = decode_loop(_MixedScorer(model, mixing), choose, input_ids, attention_mask,
                              max_new_tokens=config.max_new_tokens, eos_ids=eos)
    assert len(decoded[0].token_ids) == 2
    for row in (1, 2):
        merge_lora_deltas(model, ADAPTERS, WEIGHTS[row])
        (alone,) = generate(model, tokenizer, [PROMPTS[row]], config)
        assert decoded[row].token_ids == alone.token_ids
    set_active_adapter(model, ADAPTERS[0])


def test_bad_weights_and_plain_models_are_refused(soup, tiny):
    model, _ = soup
    with pytest.raises(ConfigError, match=r"shape \(rows, 2\)"):
        with mix_lora_rows(model, ADAPTERS, [0.5, 0.5]):
            pass
    with pytest.raises(ConfigError, match="finite"):
        with mix_lora_rows(model, ADAPTERS, [[float("nan"), 1.0]]):
            pass
    with pytest.raises(ConfigError, match="no LoRA adapter named 'nope'"):
        with mix_lora_rows(model, ["nope"], [[1.0]]):
            pass
    with pytest.raises(ConfigError, match="PeftModel"):
        with mix_lora_rows(tiny[0], ADAPTERS, WEIGHTS):
            pass


def test_a_batch_of_another_size_is_refused(soup):
    model, tokenizer = soup
    input_ids, attention_mask = _batch(tokenizer)
    with pytest.raises(ConfigError, match="weights for 2 rows"):
        with torch.no_grad(), mix_lora_rows(model, ADAPTERS, WEIGHTS[:2]):
            _logits(model, input_ids, attention_mask)
