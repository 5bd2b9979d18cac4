"""Beam search over any next-token scorer: Q=1 is greedy, exhaustive beams equal brute force, beams beat
greedy on a real (tiny) model, and the cached scorer's row copies keep each beam's own history."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.generation import CausalLMScorer, GenerationConfig, encode_prompts, generate, sequence_logprobs
from paretoalign.generation.beam import beam_search, generate_with_scorer
from paretoalign.generation.decoding import eos_token_ids

PROMPTS = ["Hello there", "Explain photosynthesis to a child in simple words.", "a", "How do I cook rice?"]
VOCAB, EOS = 4, 3


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny Llama with larger random weights, so different prefixes get clearly different scores."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


class TableScorer:
    """A scorer over a 4-token vocabulary (EOS = 3) whose logits are a fixed random function of the
    prompt's last id and the tokens so far: a real NextTokenScorer without a model, small enough to
    enumerate every sequence."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.histories: list[tuple[int, ...]] = []

    def logits(self, history: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(hash((self.seed,) + history) % 2**31)
        return 2 * torch.randn(VOCAB, generator=generator)

    def _scores(self) -> torch.Tensor:
        return torch.stack([self.logits(history) for history in self.histories])

    def start(self, input_ids, attention_mask):
        self.histories = [(int(row[-1]),) for row in input_ids]
        return self._scores()

    def extend(self, tokens):
        self.histories = [history + (int(token),) for history, token in zip(self.histories, tokens)]
        return self._scores()

    def keep_rows(self, rows):
        self.histories = [self.histories[int(row)] for row in rows]


def brute_force(scorer: TableScorer, prompt_id: int, length: int, length_penalty: float) -> list[tuple[float, list[int]]]:
    """Every sequence up to ``length`` tokens (ending at EOS or at the length), by normalized score, best first."""
    ranked = []
    for size in range(1, length + 1):
        for tokens in itertools.product(range(VOCAB), repeat=size):
            if EOS in tokens[:-1] or (size < length and tokens[-1] != EOS):
                continue
            history, total = (prompt_id,), 0.0
            for token in tokens:
                total += float(torch.log_softmax(scorer.logits(history), -1)[token])
                history += (token,)
            ranked.append((total / size**length_penalty, list(tokens)))
    return sorted(ranked, key=lambda item: -item[0])


@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0])
def test_exhaustive_beams_equal_brute_force(length_penalty):
    scorer, length = TableScorer(), 3
    prompts = torch.tensor([[5], [6], [7]])
    found = beam_search(scorer, prompts, torch.ones_like(prompts), beams=VOCAB ** (length - 1),
                        max_new_tokens=length, eos_ids={EOS}, num_return=5, length_penalty=length_penalty)
    for prompt_id, candidates in zip([5, 6, 7], found):
        expected = brute_force(TableScorer(), prompt_id, length, length_penalty)[:5]
        assert [c.token_ids for c in candidates] == [tokens for _, tokens in expected]
        assert [c.normalized_score for c in candidates] == pytest.approx([score for score, _ in expected], abs=1e-9)
        for c in candidates:
            assert c.finish_reason == ("eos" if c.token_ids[-1] == EOS else "length")
            assert c.score == pytest.approx(sum(c.logprobs), abs=1e-9)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("eos_range", [(0, 100), (40, 140)])
def test_beams_equal_hugging_face_beam_search(model, tokenizer, length_penalty, eos_range):
    """HF ``generate(num_beams=..., early_stopping="never")`` is the oracle. A quarter of the vocabulary
    acts as EOS, so several EOS continuations compete in one step, beams end at different lengths, the
    length penalty matters, and stopping early would change some results."""
    batch = encode_prompts(tokenizer, PROMPTS)
    eos = list(range(*eos_range))
    hf = model.generate(**batch, num_beams=4, num_return_sequences=3, do_sample=False, max_new_tokens=8,
                        length_penalty=length_penalty, early_stopping="never", eos_token_id=eos,
                        pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        ours = beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=4,
                           max_new_tokens=8, eos_ids=set(eos), num_return=3, length_penalty=length_penalty)
    flat = [candidate for candidates in ours for candidate in candidates]
    expected = [_until_eos(row, eos) for row in hf.sequences[:, batch["input_ids"].shape[1] :].tolist()]
    assert [c.token_ids for c in flat] == expected
    assert [c.normalized_score for c in flat] == pytest.approx(hf.sequences_scores.tolist(), abs=1e-4)
    assert {c.finish_reason for c in flat} == ({"eos"} if length_penalty == 0 else {"eos", "length"})


def _until_eos(ids: list[int], eos: list[int]) -> list[int]:
    end = next((i for i, token in enumerate(ids) if token in eos), len(ids) - 1)
    return ids[: end + 1]


def test_min_new_tokens_keeps_eos_out_of_the_first_steps():
    prompts = torch.tensor([[5], [6]])
    found = beam_search(TableScorer(), prompts, torch.ones_like(prompts), beams=16, max_new_tokens=3,
                        eos_ids={EOS}, num_return=16, min_new_tokens=2)
    ids = [c.token_ids for candidates in found for c in candidates]
    assert ids and all(EOS not in tokens[:2] for tokens in ids)
    assert any(tokens[-1] == EOS for tokens in ids)


def test_one_beam_without_length_penalty_is_greedy_with_eos():
    prompts = torch.tensor([[p] for p in range(20)])
    found = beam_search(TableScorer(seed=3), prompts, torch.ones_like(prompts), beams=1, max_new_tokens=6,
                        eos_ids={EOS}, length_penalty=0.0)
    ended = 0
    for prompt_id, (best,) in zip(range(20), found):
        history, greedy = (prompt_id,), []
        while len(greedy) < 6 and (not greedy or greedy[-1] != EOS):
            greedy.append(int(TableScorer(seed=3).logits(history).argmax()))
            history += (greedy[-1],)
        assert best.token_ids == greedy
        ended += greedy[-1] == EOS
    assert 0 < ended < 20  # both endings were exercised


def test_one_beam_equals_greedy_generation_on_a_model(model, tokenizer):
    greedy = generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=10, do_sample=False))
    batch = encode_prompts(tokenizer, PROMPTS)
    with torch.inference_mode():
        found = beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=1,
                            max_new_tokens=10, eos_ids=eos_token_ids(model, tokenizer), length_penalty=0.0)
    assert [best.token_ids for (best,) in found] == [r.token_ids for r in greedy]


def test_generation_with_beams_returns_the_best_beam_as_a_point_mass(model, tokenizer):
    config = GenerationConfig(max_new_tokens=6, do_sample=False)
    responses = generate_with_scorer(lambda: CausalLMScorer(model), tokenizer, PROMPTS, config,
                                     eos_ids=eos_token_ids(model, tokenizer), device=model.device, beams=3)
    batch = encode_prompts(tokenizer, PROMPTS)
    with torch.inference_mode():
        found = beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=3,
                            max_new_tokens=6, eos_ids=eos_token_ids(model, tokenizer))
    assert [r.token_ids for r in responses] == [best.token_ids for (best,) in found]
    assert [r.meta["beam_score"] for r in responses] == pytest.approx([best.score for (best,) in found], abs=1e-4)
    assert all(r.logprobs == [0.0] * len(r.token_ids) and r.prompt == p for r, p in zip(responses, PROMPTS))


def test_beams_score_at_least_greedy_and_scores_match_teacher_forcing(model, tokenizer):
    batch = encode_prompts(tokenizer, PROMPTS)
    eos = eos_token_ids(model, tokenizer)
    with torch.inference_mode():
        greedy = beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=1,
                             max_new_tokens=8, eos_ids=eos, length_penalty=0.0)
        beams = beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=4,
                            max_new_tokens=8, eos_ids=eos, num_return=3, length_penalty=0.0)
    best = [candidates[0] for candidates in beams]
    assert all(b.score >= g.score - 1e-6 for b, (g,) in zip(best, greedy))
    assert any(b.score > g.score + 1e-3 for b, (g,) in zip(best, greedy))
    flat = [c for candidates in beams for c in candidates]
    prompts = [p for p, candidates in zip(PROMPTS, beams) for _ in candidates]
    forced = sequence_logprobs(model, tokenizer, prompts, [c.token_ids for c in flat])
    for candidate, reference in zip(flat, forced):
        assert candidate.score == pytest.approx(float(reference.double().sum()), abs=1e-3)
    assert all(len({tuple(c.token_ids) for c in candidates}) == 3 for candidates in beams)


def test_batched_beams_equal_one_prompt_at_a_time(model, tokenizer):
    def run(prompts):
        batch = encode_prompts(tokenizer, prompts)
        with torch.inference_mode():
            return beam_search(CausalLMScorer(model), batch["input_ids"], batch["attention_mask"], beams=3,
                               max_new_tokens=6, eos_ids=eos_token_ids(model, tokenizer), num_return=2)

    together = run(PROMPTS)
    for prompt, candidates in zip(PROMPTS, together):
        (alone,) = run([prompt])
        assert [c.token_ids for c in candidates] == [c.token_ids for c in alone]
        assert [c.score for c in candidates] == pytest.approx([c.score for c in alone], abs=1e-4)


def test_bad_beam_settings_are_refused(model, tokenizer):
    prompts = torch.tensor([[5]])
    with pytest.raises(ConfigError, match="num_return"):
        beam_search(TableScorer(), prompts, torch.ones_like(prompts), beams=2, max_new_tokens=3,
                    eos_ids={EOS}, num_return=3)
    with pytest.raises(ConfigError, match="stop strings"):
        generate_with_scorer(lambda: CausalLMScorer(model), tokenizer, ["hi"],
                             GenerationConfig(max_new_tokens=3, stop=("x",)), eos_ids={0}, device=model.device, beams=2)
    assert math.isfinite(beam_search(TableScorer(), prompts, torch.ones_like(prompts), beams=2,
                                     max_new_tokens=0, eos_ids={EOS})[0][0].score)
