"""MOD: weights (1, 0, ...) reproduce policy 1 for every divergence, sampling included; forward KL and α fuse
prefix probabilities (hand-computed 2-step examples, and a slow recompute on real tiny models); beam search
ranks by the fused prefix score; one preference per prompt decodes in one batch and equals each preference
alone; batched adapters equal per-adapter forwards; zero weights cost no forward; bad input ends in one-line
errors."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from test_beam import TableScorer
from tiny import make_tokenizer

from paretoalign.core.errors import ConfigError
from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig, encode_prompts, generate, kl_to_reference, prompt_token_ids
from paretoalign.generation.beam import beam_search
from paretoalign.generation.fusion import AdapterRowsScorer, FusedScorer, fuse_logprobs
from paretoalign.methods.mod import MODPolicy
from paretoalign.models.lora import attach_lora, set_active_adapter

PROMPTS = ["Hello there", "Explain photosynthesis to a child in simple words.", "a"]
OBJECTIVES = ["simplicity", "friendliness"]
DIVERGENCES = ["reverse_kl", "forward_kl", "alpha"]
MIXED = [Preference.parse("simplicity=1"), Preference.parse("simplicity=0.3,friendliness=0.7"),
         Preference.parse("friendliness=1")]


def _random_model(folder, seed: int):
    """The tiny Llama from ``folder`` re-initialised with larger weights (distinct, non-degenerate outputs)."""
    config = AutoConfig.from_pretrained(folder)
    config.initializer_range = 0.3
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return _random_model(tiny_model_dir, seed=0)


@pytest.fixture(scope="module")
def models(tiny_model_dir, base):
    return [base, _random_model(tiny_model_dir, seed=1)]


@pytest.fixture(scope="module")
def peft(base):
    """A copy of the base with one LoRA adapter per objective, each with random non-zero B."""
    model = attach_lora(copy.deepcopy(base), OBJECTIVES[0], r=4)
    attach_lora(model, OBJECTIVES[1], r=4)
    torch.manual_seed(2)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    return model.eval()


def _single_policy(peft_or_models, index: int):
    """Policy ``index`` on its own: its adapter made active, or its model."""
    if isinstance(peft_or_models, list):
        return peft_or_models[index]
    return set_active_adapter(peft_or_models, OBJECTIVES[index])


@pytest.mark.parametrize("kind", ["adapters", "models"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("index", [0, 1])
def test_one_weight_reproduces_that_policy(kind, divergence, index, request, tokenizer):
    """Greedy and sampled: the tokens, and the log-probabilities of the distribution sampled from, are policy
    ``index``'s own (for α the 1/α matters here: without it sampling draws from π^α renormalized)."""
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    mod = MODPolicy(policies, tokenizer, OBJECTIVES, divergence=divergence, alpha=0.5)
    alone = _single_policy(policies, index)
    preference = Preference.parse({OBJECTIVES[index]: 1.0, OBJECTIVES[1 - index]: 0.0})
    for config in (GenerationConfig(max_new_tokens=10, do_sample=False), GenerationConfig(max_new_tokens=10, seed=7)):
        expected = generate(alone, tokenizer, PROMPTS, config)
        fused = mod.generate(PROMPTS, preference, config)
        assert [r.token_ids for r in fused] == [r.token_ids for r in expected]
        for ours, theirs in zip(fused, expected):
            assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)


def _slow_fused(policy_logprobs: list[torch.Tensor], weights: list[float], divergence: str, alpha: float
                ) -> torch.Tensor:
    """The fused score written out term by term in float64, as METHODS.md states it."""
    if divergence == "reverse_kl":
        return sum(weight * logprobs for weight, logprobs in zip(weights, policy_logprobs))
    exponent = 1.0 if divergence == "forward_kl" else alpha
    total = sum(weight * logprobs.exp() ** (-exponent) for weight, logprobs in zip(weights, policy_logprobs))
    return -total.log() / exponent


def _full_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log π(·|ids) recomputed from scratch: one unpadded forward, no cache."""
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)


def _step_logprobs(model, prompt_ids: list[int], tokens: list[int], per_token: bool) -> list[torch.Tensor]:
    """For each step t and every token a: log π(y_<t·a|x), the teacher-forced prefix plus the next token
    (``per_token``: log π(a|x, y_<t) alone), each context recomputed from scratch."""
    steps, prefix = [], 0.0
    for step, token in enumerate(tokens):
        logprobs = _full_logprobs(model, prompt_ids + tokens[:step])
        steps.append(logprobs if per_token else prefix + logprobs)
        prefix += float(logprobs[token])
    return steps


@pytest.mark.parametrize("kind", ["adapters", "models"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("per_token", [False, True])
def test_sampled_logprobs_match_a_slow_recompute(kind, divergence, per_token, request, tokenizer):
    """Each sampled token's log-probability is log softmax_a(s(y_<t·a) / T): the fused score of every policy's
    PREFIX probability (``per_token=True``: of the step's probabilities alone)."""
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    weights, alpha, temperature = [0.3, 0.7], 0.6, 0.8
    mod = MODPolicy(policies, tokenizer, OBJECTIVES, divergence=divergence, alpha=alpha, per_token=per_token)
    config = GenerationConfig(max_new_tokens=6, temperature=temperature, seed=3)
    responses = mod.generate(PROMPTS, Preference.parse(dict(zip(OBJECTIVES, weights))), config)
    for prompt_ids, response in zip(prompt_token_ids(tokenizer, PROMPTS), responses):
        per_policy = [_step_logprobs(_single_policy(policies, k), prompt_ids, response.token_ids, per_token)
                      for k in range(2)]
        for step, token in enumerate(response.token_ids):
            fused = _slow_fused([steps[step] for steps in per_policy], weights, divergence, alpha)
            assert response.logprobs[step] == pytest.approx(float(torch.log_softmax(fused / temperature, -1)[token]),
                                                            abs=1e-4)
        assert response.meta["steering"]["fusion"] == ("per_token" if per_token else "prefix")


class ChainScorer(TableScorer):
    """test_beam's table scorer over a 2-token vocabulary whose next-token probabilities are a table of the
    tokens so far: policies small enough to compute MOD by hand."""

    def __init__(self, table: dict[tuple[int, ...], list[float]]) -> None:
        super().__init__()
        self.table = table

    def logits(self, history: tuple[int, ...]) -> torch.Tensor:
        return torch.tensor(self.table[history[1:]]).log()  # history[0] is the prompt's last id


def _prefix(table: dict[tuple[int, ...], list[float]], tokens: tuple[int, ...]) -> float:
    """log π(tokens) of a table policy."""
    return sum(math.log(table[tokens[:step]][token]) for step, token in enumerate(tokens))


FIRST = {(): [0.8, 0.2], (0,): [0.5, 0.5], (1,): [0.6, 0.4]}
SECOND = {(): [0.2, 0.8], (0,): [0.9, 0.1], (1,): [0.6, 0.4]}


@pytest.mark.parametrize(("divergence", "expected"), [
    # P(b | 0) ∝ e^s(0b), s = ½ log π1 + ½ log π2: the step's own √(π1 π2) = √(.5·.9), √(.5·.1)
    ("reverse_kl", [math.sqrt(0.45), math.sqrt(0.05)]),
    # e^s = 1 / (½/π1(0b) + ½/π2(0b)), prefixes π1(0·) = .8·(.5, .5) and π2(0·) = .2·(.9, .1)
    ("forward_kl", [1 / (0.5 / 0.4 + 0.5 / 0.18), 1 / (0.5 / 0.4 + 0.5 / 0.02)]),
    # α = ½: e^s = (½ π1(0b)^-½ + ½ π2(0b)^-½)^-2
    ("alpha", [(0.5 / math.sqrt(0.4) + 0.5 / math.sqrt(0.18)) ** -2,
               (0.5 / math.sqrt(0.4) + 0.5 / math.sqrt(0.02)) ** -2]),
])
def test_two_steps_fuse_prefix_probabilities(divergence, expected):
    """Row 0 weights (½, ½), row 1 (1, 0): step 1 is a tie for row 0 (the policies mirror each other), step 2
    after token 0 is the hand-computed prefix fusion; row 1 is policy 1's own distribution at both steps. The
    per-token form differs from the prefix form for forward KL and α only."""
    def two_steps(per_token: bool) -> tuple[torch.Tensor, torch.Tensor]:
        scorer = FusedScorer([ChainScorer(FIRST), ChainScorer(SECOND)], [[0.5, 0.5], [1.0, 0.0]], divergence,
                             alpha=0.5, per_token=per_token)
        first = scorer.start(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long))
        return first, scorer.extend(torch.tensor([0, 0]))

    first, second = two_steps(per_token=False)
    torch.testing.assert_close(first.softmax(-1), torch.tensor([[0.5, 0.5], [0.8, 0.2]]))
    torch.testing.assert_close(second.softmax(-1), torch.tensor([[e / sum(expected) for e in expected], [0.5, 0.5]]))
    for b in (0, 1):  # the increments add up to s(0b) itself (the weights sum to 1, so s(∅) = 0)
        prefixes = [torch.tensor(_prefix(table, (0, b)), dtype=torch.float64) for table in (FIRST, SECOND)]
        expected_score = float(_slow_fused(prefixes, [0.5, 0.5], divergence, 0.5))
        assert float(first[0, 0] + second[0, b]) == pytest.approx(expected_score)
        assert float(first[1, 0] + second[1, b]) == pytest.approx(_prefix(FIRST, (0, b)), abs=1e-6)
    per_token = two_steps(per_token=True)[1].softmax(-1)[0]
    assert torch.allclose(per_token, second.softmax(-1)[0]) == (divergence == "reverse_kl")


def test_batched_adapter_forward_equals_separate_adapter_forwards(peft, tokenizer):
    batch = encode_prompts(tokenizer, PROMPTS)
    twice = [batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1)]
    policies = [0] * len(PROMPTS) + [1] * len(PROMPTS)  # the prompts under adapter 0, then under adapter 1
    lora_layers = [module for module in peft.modules() if isinstance(module, LoraLayer)]
    with torch.inference_mode():
        stacked = AdapterRowsScorer(peft, OBJECTIVES).start(*twice, policies)
        with AdapterRowsScorer(peft, OBJECTIVES) as routed:  # hooks set once for the decode
            assert all(layer._forward_pre_hooks for layer in lora_layers)
            torch.testing.assert_close(routed.start(*twice, policies), stacked)
        assert not any(layer._forward_pre_hooks for layer in lora_layers)
        separate = []
        for name in OBJECTIVES:
            set_active_adapter(peft, name)
            position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            separate.append(peft(**batch, position_ids=position_ids).logits[:, -1])
    torch.testing.assert_close(stacked, torch.cat(separate), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(separate[0], separate[1], atol=1e-2)  # the adapters really differ


def _shapes_seen(model) -> list[tuple[int, int]]:
    """Attach a recorder of the (rows, tokens) of every forward that reaches ``model``'s embedding layer."""
    seen: list[tuple[int, int]] = []
    embeddings = model.get_input_embeddings()
    embeddings.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    return seen


def test_zero_weight_policies_run_no_forward(tiny_model_dir, tokenizer):
    """A policy runs only the rows that weight it: per preference, and per row when prompts differ (one
    prefill per policy for the whole mixed batch)."""
    models = [_random_model(tiny_model_dir, seed=0), _random_model(tiny_model_dir, seed=1)]
    seen = [_shapes_seen(model) for model in models]
    mod = MODPolicy(models, tokenizer, OBJECTIVES)
    mod.generate(PROMPTS, Preference.parse("simplicity=1"), GenerationConfig(max_new_tokens=3))
    assert seen[0] and not seen[1]
    seen[0].clear()
    mod.generate(PROMPTS, MIXED, GenerationConfig(max_new_tokens=3, min_new_tokens=3))
    assert [[rows for rows, _ in shapes] for shapes in seen] == [[2, 2, 2], [2, 2, 2]]  # prompts 0, 1 and 1, 2
    peft = attach_lora(_random_model(tiny_model_dir, seed=0), OBJECTIVES[0], r=2)
    attach_lora(peft, OBJECTIVES[1], r=2)
    shapes = _shapes_seen(peft)
    mod = MODPolicy(peft, tokenizer, OBJECTIVES)
    mod.generate(PROMPTS, Preference.parse("friendliness=1"), GenerationConfig(max_new_tokens=3, min_new_tokens=3))
    mod.generate(PROMPTS, Preference.parse("friendliness=0.5,simplicity=0.5"), GenerationConfig(max_new_tokens=1))
    mod.generate(PROMPTS, MIXED, GenerationConfig(max_new_tokens=1))
    assert [rows for rows, _ in shapes] == [len(PROMPTS)] * 3 + [2 * len(PROMPTS), 4]


def test_alpha_one_is_forward_kl_and_fusion_keeps_impossible_tokens_impossible():
    logprobs = torch.log_softmax(torch.randn(2, 3, 5), dim=-1)
    logprobs[1, :, 0] = float("-inf")
    forward = fuse_logprobs(logprobs, [0.4, 0.6], "forward_kl")
    torch.testing.assert_close(forward, fuse_logprobs(logprobs, [0.4, 0.6], "alpha", alpha=1.0))
    assert torch.isneginf(forward[:, 0]).all() and torch.isneginf(fuse_logprobs(logprobs, [0.4, 0.6])[:, 0]).all()
    assert torch.isfinite(forward[:, 1:]).all()


TIE_1 = {(): [0.5, 0.5], (0,): [0.9, 0.1], (1,): [0.6, 0.4]}
TIE_2 = {(): [0.5, 0.5], (0,): [0.01, 0.99], (1,): [0.6, 0.4]}


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_beams_rank_by_the_fused_prefix_score(divergence):
    """Step 1 is a tie; after token 0 the policies disagree, so every continuation has a low fused prefix score
    while one has a high renormalized step score. Summing renormalized step scores ranks (0, 1) first; the
    fused prefix score s(y), which beam search must rank by, puts (1, 0) then (1, 1) first."""
    weights, tables = [0.5, 0.5], (TIE_1, TIE_2)

    def fused(tokens: tuple[int, ...], per_token: bool = False) -> torch.Tensor:
        """s over the two tokens of the next step after ``tokens``."""
        logprobs = [torch.tensor([(0.0 if per_token else _prefix(table, tokens)) + math.log(p)
                                  for p in table[tokens]], dtype=torch.float64) for table in tables]
        return _slow_fused(logprobs, weights, divergence, 0.5)

    sequences = list(itertools.product(range(2), repeat=2))
    by_score = sorted(sequences, key=lambda y: -float(fused(y[:1])[y[1]]))
    by_steps = sorted(sequences, key=lambda y: -sum(float(fused(y[:t], True).log_softmax(-1)[y[t]]) for t in range(2)))
    assert by_score[:2] == [(1, 0), (1, 1)] and by_steps[0] == (0, 1)
    scorer = FusedScorer([ChainScorer(TIE_1), ChainScorer(TIE_2)], weights, divergence, alpha=0.5)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    (found,) = beam_search(scorer, prompt, torch.ones_like(prompt), beams=2, max_new_tokens=2, eos_ids=set(),
                           num_return=2, length_penalty=0.0)
    assert [tuple(c.token_ids) for c in found] == by_score[:2]
    assert [c.score for c in found] == pytest.approx([float(fused(y[:1])[y[1]]) for y in by_score[:2]], abs=1e-6)


@pytest.mark.parametrize("kind", ["adapters", "models"])
def test_beam_search_over_the_fused_score(kind, request, tokenizer):
    """Q=1 is policy 1's greedy output; with Q=3 each beam's score is s(y), the slow fused score of the whole
    response's prefix probabilities (beams copy rows of every policy's cache, so a wrong copy shows up here)."""
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    greedy_config = GenerationConfig(max_new_tokens=8, do_sample=False)
    greedy = generate(_single_policy(policies, 0), tokenizer, PROMPTS, greedy_config)
    one_beam = MODPolicy(policies, tokenizer, OBJECTIVES, beams=1).generate(
        PROMPTS, Preference.parse("simplicity=1"), greedy_config)
    assert [r.token_ids for r in one_beam] == [r.token_ids for r in greedy]
    weights = [0.4, 0.6]
    beamed = MODPolicy(policies, tokenizer, OBJECTIVES, divergence="forward_kl", beams=3).generate(
        PROMPTS, Preference.parse(dict(zip(OBJECTIVES, weights))), GenerationConfig(max_new_tokens=5))
    for prompt_ids, response in zip(prompt_token_ids(tokenizer, PROMPTS), beamed):
        tokens = response.token_ids
        prefixes = [_step_logprobs(_single_policy(policies, k), prompt_ids, tokens, False)[-1][tokens[-1]]
                    for k in range(2)]
        expected = float(_slow_fused(prefixes, weights, "forward_kl", 0.5))
        assert response.meta["beam_score"] == pytest.approx(expected, abs=1e-4)
        assert response.logprobs == [0.0] * len(response.token_ids)


@pytest.mark.parametrize("kind", ["adapters", "models"])
@pytest.mark.parametrize(("divergence", "beams"), [("reverse_kl", 1), ("forward_kl", 1), ("alpha", 1), ("alpha", 3)])
def test_one_preference_per_prompt_equals_each_preference_alone(kind, divergence, beams, request, tokenizer):
    """The three prompts decode in one batch, each row fused with its own weights (its own prefix weights,
    beams included); each equals that prompt decoded alone with its preference and the same seed."""
    policies = request.getfixturevalue("peft" if kind == "adapters" else "models")
    mod = MODPolicy(policies, tokenizer, OBJECTIVES, divergence=divergence, beams=beams)
    config = GenerationConfig(max_new_tokens=8, seed=5)
    mixed = mod.generate(PROMPTS, MIXED, config)
    for prompt, preference, response in zip(PROMPTS, MIXED, mixed):
        (alone,) = mod.generate([prompt], preference, config)
        assert response.token_ids == alone.token_ids
        assert response.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert response.meta["steering"] == alone.meta["steering"]
        assert response.meta.get("beam_score", 0.0) == pytest.approx(alone.meta.get("beam_score", 0.0), abs=1e-4)
    assert [r.meta["steering"]["policy_weights"] for r in mixed] == [
        {"simplicity": 1.0}, {"simplicity": 0.3, "friendliness": 0.7}, {"friendliness": 1.0}]


def test_reference_is_the_base_with_adapters_off(base, peft, models, tokenizer):
    reference, _ = MODPolicy(peft, tokenizer, OBJECTIVES).reference()
    batch = encode_prompts(tokenizer, PROMPTS[:1])
    with torch.inference_mode():
        torch.testing.assert_close(reference(**batch).logits, base(**batch).logits)
    responses = MODPolicy(peft, tokenizer, OBJECTIVES).generate(
        PROMPTS, Preference.parse("simplicity=0.5,friendliness=0.5"), GenerationConfig(max_new_tokens=4))
    assert (kl_to_reference(responses, reference, tokenizer) != 0).all()
    assert MODPolicy(models, tokenizer, OBJECTIVES).reference()[0] is models[0]
    assert MODPolicy(models, tokenizer, OBJECTIVES, reference_model=base).reference()[0] is base


def test_bad_input_is_refused_in_one_line(peft, models, tokenizer):
    other = make_tokenizer(vocab_size=300)
    with pytest.raises(ConfigError, match="'simplicity' and 'friendliness' have different tokenizers"):
        MODPolicy(models, [tokenizer, other], OBJECTIVES)
    mod = MODPolicy(peft, tokenizer, OBJECTIVES)
    with pytest.raises(ConfigError, match="no policy for objective 'relevance'"):
        mod.generate(PROMPTS, Preference.parse("relevance=0.5,simplicity=0.5"), GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="needs a preference"):
        mod.generate(PROMPTS, None, GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="no adapter named 'missing'"):
        MODPolicy(peft, tokenizer, OBJECTIVES, adapter_names=["missing", OBJECTIVES[1]])
    with pytest.raises(ConfigError, match="unknown divergence"):
        MODPolicy(peft, tokenizer, OBJECTIVES, divergence="js")
    with pytest.raises(ConfigError, match="alpha > 0"):
        MODPolicy(peft, tokenizer, OBJECTIVES, divergence="alpha", alpha=0.0)
    with pytest.raises(ConfigError, match="one per objective"):
        MODPolicy(models[:1], tokenizer, OBJECTIVES)
    with pytest.raises(ConfigError, match="beams"):
        MODPolicy(peft, tokenizer, OBJECTIVES, beams=0)
    with pytest.raises(ConfigError) as info:
        MODPolicy(models, [tokenizer, other], OBJECTIVES)
    assert "\n" not in str(info.value)
