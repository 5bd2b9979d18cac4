"""MAVIS value-guided decoding on tiny real Llamas: exact candidate scoring, β = 0, EOS ban, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from paretoalign.core.errors import ConfigError
from paretoalign.generation import GenerationConfig, generate
from paretoalign.generation.chat import pad_left, prompt_token_ids
from paretoalign.generation.value_guided import (
    CandidateValueScorer,
    GuidanceSettings,
    TokenValueScorer,
    final_values,
    normalize_values,
    value_guided_beam_search,
    value_guided_generate,
)
from paretoalign.models.score_model import sequence_scores, token_values

PROMPTS = ["Why is the sky blue?", "Give me three tips for better sleep tonight, please.", "Cook rice?"]


@pytest.fixture(scope="module")
def value_model(tiny_model_dir_b):
    """A scalar-head value model on another tiny Llama with the same tokenizer (random head)."""
    torch.manual_seed(3)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir_b, num_labels=1).eval()


@pytest.fixture(scope="module")
def q_model(tiny_model_dir_b):
    """A per-token (Q-head) value model: one output per vocabulary token."""
    torch.manual_seed(4)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir_b, num_labels=1)
    config = model.config
    config.num_labels = config.vocab_size
    return AutoModelForSequenceClassification.from_config(config).eval()


def _padded_prompts(tokenizer):
    ids = prompt_token_ids(tokenizer, PROMPTS)
    return ids, *pad_left(ids, tokenizer.pad_token_id)


def _full_scores(model, sequences):
    """Each sequence scored on its own by a full forward (the slow reference)."""
    return torch.stack([sequence_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]
                        for s in sequences])


def test_batched_candidate_scoring_equals_separate_forwards(tiny, value_model):
    _, tokenizer = tiny
    ids, input_ids, attention_mask = _padded_prompts(tokenizer)
    scorer = CandidateValueScorer(value_model)
    generator = torch.Generator().manual_seed(0)
    prefixes = [list(row) for row in ids]
    with torch.inference_mode():
        scorer.start(input_ids, attention_mask)
        for _ in range(3):  # three steps: the kept candidate must serve as the next prefix token
            candidates = torch.randint(4, 300, (len(PROMPTS), 5), generator=generator)
            batched = scorer.candidate_values(candidates)
            separate = torch.stack([
                _full_scores(value_model, [prefix + [int(c)] for c in row]) for prefix, row in zip(prefixes, candidates)
            ])
            torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-4)
            chosen = torch.tensor([1, 4, 0])
            tokens = candidates[torch.arange(3), chosen]
            scorer.advance(chosen, tokens)
            prefixes = [prefix + [int(t)] for prefix, t in zip(prefixes, tokens)]


def test_token_value_scorer_reads_q_at_the_prefix(tiny, q_model):
    _, tokenizer = tiny
    ids, input_ids, attention_mask = _padded_prompts(tokenizer)
    scorer = TokenValueScorer(q_model)
    candidates = torch.tensor([[5, 6], [7, 8], [9, 10]])
    with torch.inference_mode():
        scorer.start(input_ids, attention_mask)
        scorer.advance(torch.zeros(3, dtype=torch.long), torch.tensor([11, 12, 13]))
        values = scorer.candidate_values(candidates)
        for row, prefix in enumerate(ids):
            sequence = torch.tensor([prefix + [11 + row]])
            q = token_values(q_model, sequence, torch.ones_like(sequence))[0, -1]
            torch.testing.assert_close(values[row], q[candidates[row]], atol=1e-5, rtol=1e-4)


def test_beta_zero_reproduces_top_k_sampling(tiny, value_model):
    model, tokenizer = tiny
    config = GenerationConfig(max_new_tokens=12, temperature=0.8, top_k=7, min_new_tokens=1, seed=5)
    plain = generate(model, tokenizer, PROMPTS, config)
    guided = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model)],
                                   GuidanceSettings(beta=0.0, top_k=7))
    assert [r.token_ids for r in guided] == [r.token_ids for r in plain]
    for ours, theirs in zip(guided, plain):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-5)


def test_beta_tilts_towards_high_values(tiny, value_model):
    model, tokenizer = tiny
    config = GenerationConfig(max_new_tokens=6, seed=1, do_sample=False)
    base = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model)], GuidanceSettings(beta=0.0))
    tilted = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model)],
                                   GuidanceSettings(beta=1e4, value_normalization="zscore", top_k=10))
    assert [r.token_ids for r in base] != [r.token_ids for r in tilted]
    ids, input_ids, attention_mask = _padded_prompts(tokenizer)
    with torch.inference_mode():  # with a huge β the first token is the top-10 candidate of highest value
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1]
        logits[:, tokenizer.eos_token_id] = float("-inf")
        candidates = logits.topk(10, dim=-1).indices
        values = torch.stack([_full_scores(value_model, [p + [int(c)] for c in row]) for p, row in zip(ids, candidates)])
    assert [r.token_ids[0] for r in tilted] == candidates.gather(-1, values.argmax(-1, keepdim=True)).squeeze(-1).tolist()


def test_per_prompt_weights_decode_in_one_batch_as_each_prompt_alone(tiny, value_model, q_model):
    model, tokenizer = tiny
    config = GenerationConfig(max_new_tokens=6, seed=4)
    settings = GuidanceSettings(beta=1e3, top_k=6, value_normalization="zscore")
    first, second = [1.0, 0.0, 0.3], [0.0, 1.0, 0.7]
    mixed = value_guided_generate(model, tokenizer, PROMPTS, config, [(first, value_model), (second, q_model)],
                                  settings)
    for row, prompt in enumerate(PROMPTS):
        alone = value_guided_generate(model, tokenizer, [prompt], config,
                                      [(first[row], value_model), (second[row], q_model)], settings)[0]
        assert alone.token_ids == mixed[row].token_ids
        assert alone.logprobs == pytest.approx(mixed[row].logprobs, abs=1e-4)
    same = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model), (0.0, q_model)], settings)
    assert mixed[1].token_ids != same[1].token_ids  # the second row followed its own weights
    beams = value_guided_beam_search(model, tokenizer, PROMPTS, config, [(first, value_model), (second, q_model)],
                                     settings, beams=2, candidates=2)
    for row, prompt in enumerate(PROMPTS):
        alone = value_guided_beam_search(model, tokenizer, [prompt], config,
                                         [(first[row], value_model), (second[row], q_model)], settings,
                                         beams=2, candidates=2)[0]
        assert [r.token_ids for r in alone] == [r.token_ids for r in beams[row]]
        assert [r.meta["value"] for r in alone] == pytest.approx([r.meta["value"] for r in beams[row]], abs=1e-4)
    with pytest.raises(ConfigError, match="got 2 weights of a value model for 3 prompts"):
        value_guided_generate(model, tokenizer, PROMPTS, config, [([0.5, 0.5], value_model)], settings)


def test_eos_is_banned_as_first_token(tiny, value_model):
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id

    def favour_eos(module, inputs, output):
        output[..., eos] += 100.0
        return output

    hook = model.lm_head.register_forward_hook(favour_eos)
    try:
        config = GenerationConfig(max_new_tokens=3, do_sample=False)
        banned = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model)], GuidanceSettings())
        allowed = value_guided_generate(model, tokenizer, PROMPTS, config, [(1.0, value_model)],
                                        GuidanceSettings(ban_eos_first=False))
    finally:
        hook.remove()
    assert all(r.token_ids[0] != eos for r in banned)
    assert all(r.token_ids == [eos] and r.text == "" for r in allowed)


def test_logprobs_are_those_of_the_tilted_top_k(tiny, value_model):
    model, tokenizer = tiny
    config = GenerationConfig(max_new_tokens=5, seed=2)
    responses = value_guided_generate(model, tokenizer, PROMPTS[:1], config, [(1.0, value_model)],
                                      GuidanceSettings(beta=3.0, top_k=4))
    prefix = prompt_token_ids(tokenizer, PROMPTS[:1])[0]
    first = responses[0].token_ids[0]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prefix])).logits[0, -1]
        logits[tokenizer.eos_token_id] = float("-inf")
        top, candidates = logits.topk(4)
        values = _full_scores(value_model, [prefix + [int(c)] for c in candidates])
        expected = torch.log_softmax(top / config.temperature + 3.0 * values, -1)[candidates.tolist().index(first)]
    assert responses[0].logprobs[0] == pytest.approx(float(expected), abs=1e-4)


def test_value_normalizations():
    values = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(normalize_values(values, "minmax"), torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    z = normalize_values(values, "zscore")
    torch.testing.assert_close(z[0], (values[0] - 2.0) / values[0].std(correction=0))
    torch.testing.assert_close(z[1], torch.zeros(3))
    assert normalize_values(values, "none") is values


def test_bad_settings_are_one_line_errors(tiny, value_model):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        GuidanceSettings(beta=-1.0)
    with pytest.raises(ConfigError, match="value normalization 'softmax' is not one of"):
        GuidanceSettings(value_normalization="softmax")
    with pytest.raises(ConfigError, match="larger than the vocabulary"):
        value_guided_generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=2), [(1.0, value_model)],
                              GuidanceSettings(top_k=100_000))


def test_beam_variant_ranks_candidates_by_value(tiny, value_model, q_model):
    model, tokenizer = tiny
    config = GenerationConfig(max_new_tokens=5)
    weighted = [(0.5, value_model), (0.5, q_model)]
    groups = value_guided_beam_search(model, tokenizer, PROMPTS, config, weighted, GuidanceSettings(beta=2.0, top_k=6),
                                      beams=3, candidates=3)
    assert [len(group) for group in groups] == [3, 3, 3]
    for prompt_ids, group in zip(prompt_token_ids(tokenizer, PROMPTS), groups):
        values = [r.meta["value"] for r in group]
        assert values == sorted(values, reverse=True)
        assert len({tuple(r.token_ids) for r in group}) == 3
        full = [prompt_ids + r.token_ids for r in group]
        with torch.inference_mode():
            expected = 0.5 * _full_scores(value_model, full) + 0.5 * torch.tensor(
                [float(token_values(q_model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0, -2, s[-1]])
                 for s in full])
        assert values == pytest.approx(expected.tolist(), abs=1e-4)


def test_final_values_of_left_padded_sequences(tiny, value_model):
    _, tokenizer = tiny
    sequences = prompt_token_ids(tokenizer, PROMPTS)
    with torch.inference_mode():
        batched = final_values(value_model, sequences, tokenizer.pad_token_id)
        torch.testing.assert_close(batched, _full_scores(value_model, sequences), atol=1e-5, rtol=1e-4)


@pytest.mark.integration
def test_default_model_candidate_scoring_and_beta_zero():
    """On the real default model (bf16-capable Llama, sdpa): batched candidates equal separate forwards,
    and β = 0 draws the same tokens as top-k sampling."""
    from paretoalign.models import load_model, load_score_model

    model, tokenizer = load_model(None, dtype="float32", device="cpu")
    value, _ = load_score_model(None, from_causal_lm=True, dtype="float32", device="cpu")
    prompts = PROMPTS[:2]
    ids = prompt_token_ids(tokenizer, prompts)
    input_ids, attention_mask = pad_left(ids, tokenizer.pad_token_id)
    candidates = torch.tensor([[28, 1002, 5007], [11, 407, 30000]])
    scorer = CandidateValueScorer(value)
    with torch.inference_mode():
        scorer.start(input_ids, attention_mask)
        batched = scorer.candidate_values(candidates)
        separate = torch.stack([_full_scores(value, [p + [int(c)] for c in row]) for p, row in zip(ids, candidates)])
    torch.testing.assert_close(batched, separate, atol=1e-4, rtol=1e-3)
    config = GenerationConfig(max_new_tokens=4, top_k=8, min_new_tokens=1, seed=3)
    plain = generate(model, tokenizer, prompts, config)
    guided = value_guided_generate(model, tokenizer, prompts, config, [(1.0, value)], GuidanceSettings(beta=0.0, top_k=8))
    assert [r.token_ids for r in guided] == [r.token_ids for r in plain]
