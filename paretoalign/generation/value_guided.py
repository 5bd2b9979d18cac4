"""MAVIS value-guided decoding on :func:`~paretoalign.generation.decoding.decode_loop`.

At each step the reference model π_ref proposes its top-k tokens; every value model V_i scores each
candidate continuation s∘a; the step samples from ``softmax(log π_ref(a)/T + β·v(a))`` over the top-k,
with ``v(a) = Σ_i w_i · norm(V_i(s∘a))``. A weight w_i is one number for every prompt or one per prompt, so
rows of one batch can follow different preferences.

Value scale. A value model is trained on the objective's *normalized* reward (``Objective.reward``:
``direction·(raw − mean)/std`` with the objective's stored statistics), so a raw value is "expected
normalized reward of the finished response". ``value_normalization`` says what β multiplies:

- ``none`` (default): the raw values; β is in nats per unit of normalized reward, the same for every step.
- ``zscore``: per row and step, each objective's k candidate values standardized (mean 0, std 1);
  β is in nats per standard deviation of that step's candidate values.
- ``minmax``: per row and step, each objective's values mapped to [0, 1] (the original's first version).

Two kinds of value model, told apart by their head (``config.num_labels``):

- *exact* (one label): a scalar head read at the last token of prompt + partial response + candidate.
  The k candidates of every row go through the model in ONE forward after the cached prefix: each
  candidate attends to the prefix and to itself only and takes the same position id, so its value equals
  scoring prefix+candidate separately. The chosen candidate's keys/values stay in the cache (they are
  exactly what appending that token would compute), so a step costs one forward of k tokens per row.
- *per-token* (one label per vocabulary token, a Q-head initialised from the LM head): one forward on
  the prefix gives Q(s, a) for every a, so a step costs one single-token forward, like plain sampling.
  Cheaper by about k×, but the value of s∘a is predicted from s alone, without reading a: coarser.

EOS cannot be the first token by default (an empty answer). ``Response.logprobs`` are log-probabilities
under the tilted top-k distribution actually sampled from, as the KL to the reference needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache

from ..core.errors import ConfigError
from ..models.score_model import backbone_and_head
from .beam import BeamCandidate, beam_search, generate_with_scorer
from .chat import pad_id, pad_left, prompt_token_ids
from .decoding import CausalLMScorer, Decoded, cache_keyword, eos_token_ids, evaluation_mode
from .policy import GenerationConfig, Response
from .sampling import to_response

VALUE_NORMALIZATIONS = ("none", "zscore", "minmax")
MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class GuidanceSettings:
    """How values tilt the reference: strength β, candidates k, value normalization, first-token EOS ban."""

    beta: float = 1.0
    top_k: int = 40
    value_normalization: str = "none"
    ban_eos_first: bool = True

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}; 0 samples from the reference's top-k")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.value_normalization not in VALUE_NORMALIZATIONS:
            raise ConfigError(
                f"value normalization {self.value_normalization!r} is not one of {', '.join(VALUE_NORMALIZATIONS)}"
            )

    def check_vocabulary(self, vocab_size: int) -> None:
        """Refuse a k larger than the vocabulary the reference scores."""
        if self.top_k > vocab_size:
            raise ConfigError(f"top_k {self.top_k} is larger than the vocabulary ({vocab_size} tokens); lower --top-k")


def is_token_value_model(model) -> bool:
    """True for a per-token value model (a Q-head: one output per vocabulary token)."""
    return int(getattr(model.config, "num_labels", 1)) > 1


class _PrefixCache:
    """A value model's transformer body with a KV cache over the prefix, left-padding aware."""

    def __init__(self, model) -> None:
        self.backbone, self.head = backbone_and_head(model)
        self.dtype = next(model.parameters()).dtype
        self.cache_keyword = cache_keyword(self.backbone)
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None

    def forward(self, input_ids: torch.Tensor, attention_mask, position_ids: torch.Tensor) -> torch.Tensor:
        """Run the body on new tokens after the cache; return their last hidden states."""
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_keyword: self.cache},
        )
        return output.last_hidden_state

    def read(self, hidden: torch.Tensor) -> torch.Tensor:
        """The value head on hidden states, in float32."""
        return self.head(hidden).float()

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Read the prompts; return the head's output at the last position."""
        self.cache = DynamicCache(config=self.backbone.config)
        self.attention_mask = attention_mask
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = position_ids[:, -1] + 1
        return self.read(self.forward(input_ids, attention_mask, position_ids)[:, -1])

    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the head's output there."""
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones((len(tokens), 1))], dim=1)
        position_ids = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self.read(self.forward(tokens[:, None], self.attention_mask, position_ids)[:, -1])

    def keep_rows(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.attention_mask.device)
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


class CandidateValueScorer:
    """Exact values V(s∘a) of k candidates per row from a scalar-head value model, all in one forward."""

    def __init__(self, model) -> None:
        self.prefix = _PrefixCache(model)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Cache the prompts (no value is needed for the prompt alone)."""
        self.prefix.prefill(input_ids, attention_mask)

    def candidate_values(self, candidates: torch.Tensor) -> torch.Tensor:
        """``(rows, k)`` values of prefix + each candidate token; the candidates stay in the cache until
        :meth:`advance` keeps the chosen one."""
        prefix, k = self.prefix, candidates.shape[1]
        blocked = torch.finfo(prefix.dtype).min
        past = torch.zeros(prefix.attention_mask.shape, dtype=prefix.dtype, device=candidates.device)
        past = past.masked_fill(prefix.attention_mask == 0, blocked)[:, None, None, :].expand(-1, 1, k, -1)
        own = torch.full((k, k), blocked, dtype=prefix.dtype, device=candidates.device).fill_diagonal_(0)
        mask = torch.cat([past, own.expand(len(candidates), 1, k, k)], dim=-1)
        positions = prefix.next_position[:, None].expand(-1, k)
        return prefix.read(prefix.forward(candidates, mask, positions))[..., 0]

    def advance(self, chosen_index: torch.Tensor, tokens: torch.Tensor) -> None:
        """Keep the chosen candidate's keys/values as the next prefix token and drop the other k − 1."""
        prefix = self.prefix
        length = prefix.attention_mask.shape[1]
        rows = torch.arange(len(chosen_index), device=chosen_index.device)
        for layer in prefix.cache.layers:
            layer.keys = torch.cat([layer.keys[:, :, :length], layer.keys[rows, :, length + chosen_index, None]], dim=2)
            layer.values = torch.cat(
                [layer.values[:, :, :length], layer.values[rows, :, length + chosen_index, None]], dim=2
            )
        prefix.attention_mask = torch.cat([prefix.attention_mask, prefix.attention_mask.new_ones((len(rows), 1))], 1)
        prefix.next_position = prefix.next_position + 1

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.prefix.keep_rows(rows)


class TokenValueScorer:
    """Per-token values Q(s, a) for every a from a Q-head value model: one single-token forward per step."""

    def __init__(self, model) -> None:
        self.prefix = _PrefixCache(model)
        self.values: torch.Tensor | None = None

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.values = self.prefix.prefill(input_ids, attention_mask)

    def candidate_values(self, candidates: torch.Tensor) -> torch.Tensor:
        return self.values.gather(-1, candidates)

    def advance(self, chosen_index: torch.Tensor, tokens: torch.Tensor) -> None:
        self.values = self.prefix.append(tokens)

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.prefix.keep_rows(rows)
        self.values = self.values[rows.to(self.values.device)]


def value_scorer(model) -> CandidateValueScorer | TokenValueScorer:
    """The scorer that fits ``model``'s head: exact candidate scoring or a per-token Q-head."""
    return TokenValueScorer(model) if is_token_value_model(model) else CandidateValueScorer(model)


def normalize_values(values: torch.Tensor, how: str) -> torch.Tensor:
    """``(rows, k)`` candidate values normalized per row as ``how`` says (see the module docstring)."""
    if how == "zscore":
        return (values - values.mean(-1, keepdim=True)) / values.std(-1, keepdim=True, correction=0).clamp(min=MIN_SPREAD)
    if how == "minmax":
        low, high = values.amin(-1, keepdim=True), values.amax(-1, keepdim=True)
        return (values - low) / (high - low).clamp(min=MIN_SPREAD)
    return values


class ValueGuidedScorer:
    """A :class:`NextTokenScorer` whose scores are the tilted top-k: ``log π_ref(a)/T + β·v(a)`` on the
    reference's top-k tokens and −inf elsewhere (sample them with temperature 1, no truncation).

    ``weighted_values``: ``(weight, value model)`` pairs; a weight is one number or one per row of the batch.
    ``reference_logprobs`` holds the full reference log-probabilities (temperature 1) of the last step,
    for KL bookkeeping (e.g. MAVIS soft-value targets).
    """

    def __init__(
        self,
        reference_model,
        weighted_values: Sequence[tuple[float, object]],
        settings: GuidanceSettings,
        *,
        temperature: float = 1.0,
        eos_ids: Sequence[int] = (),
        eos_banned_steps: int = 0,
    ) -> None:
        self.reference = CausalLMScorer(reference_model)
        self.weights = [weight for weight, _ in weighted_values]
        self.scorers = [value_scorer(model) for _, model in weighted_values]
        self.settings = settings
        self.temperature = temperature
        self.eos_ids = sorted(eos_ids)
        self.eos_banned_steps = eos_banned_steps
        self.step = 0
        self.candidates: torch.Tensor | None = None
        self.reference_logprobs: torch.Tensor | None = None
        self.row_weights: torch.Tensor | None = None

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows = input_ids.shape[0]
        columns = [torch.full((rows,), float(w)) if isinstance(w, (int, float)) else torch.as_tensor(w).float()
                   for w in self.weights]
        self.row_weights = (torch.stack(columns, -1) if columns else torch.zeros(rows, 0)).to(input_ids.device)
        logits = self.reference.start(input_ids, attention_mask)
        for scorer in self.scorers:
            scorer.start(input_ids.to(_device(scorer)), attention_mask.to(_device(scorer)))
        return self._tilt(logits)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        chosen = (self.candidates == tokens[:, None]).int().argmax(-1)
        for scorer in self.scorers:
            scorer.advance(chosen.to(_device(scorer)), tokens.to(_device(scorer)))
        return self._tilt(self.reference.extend(tokens))

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.reference.keep_rows(rows)
        for scorer in self.scorers:
            scorer.keep_rows(rows.to(_device(scorer)))
        self.candidates = self.candidates[rows]
        self.row_weights = self.row_weights[rows.to(self.row_weights.device)]

    def _tilt(self, logits: torch.Tensor) -> torch.Tensor:
        self.reference_logprobs = torch.log_softmax(logits, dim=-1)
        if self.step < self.eos_banned_steps and self.eos_ids:
            logits = logits.index_fill(-1, torch.tensor(self.eos_ids, device=logits.device), float("-inf"))
        self.step += 1
        top_logits, self.candidates = logits.topk(self.settings.top_k, dim=-1)
        tilted = top_logits / self.temperature if self.temperature != 1.0 else top_logits
        if self.scorers:
            tilted = tilted + self.settings.beta * self.weighted_value(self.candidates).to(tilted.device)
        return torch.full_like(logits, float("-inf")).scatter(-1, self.candidates, tilted)

    def weighted_value(self, candidates: torch.Tensor) -> torch.Tensor:
        """v(a) = Σ_i w_i · norm(V_i(s∘a)) for the ``(rows, k)`` candidate tokens (w_i of each row)."""
        total = torch.zeros(candidates.shape, dtype=torch.float32, device=candidates.device)
        weights = self.row_weights.to(candidates.device)
        for index, scorer in enumerate(self.scorers):
            values = scorer.candidate_values(candidates.to(_device(scorer)))
            normalized = normalize_values(values, self.settings.value_normalization).to(total.device)
            total = total + weights[:, index, None] * normalized
        return total


def _device(scorer) -> torch.device:
    return next(scorer.prefix.backbone.parameters()).device


def eos_banned_steps(config: GenerationConfig, settings: GuidanceSettings) -> int:
    """Steps at whose start EOS is masked out: ``min_new_tokens``, and at least 1 when the first is banned."""
    return max(config.min_new_tokens, 1 if settings.ban_eos_first else 0)


def guided_sampler_config(config: GenerationConfig) -> GenerationConfig:
    """The chooser's settings: temperature, top-k and EOS banning are already in the tilted scores."""
    return replace(config, temperature=1.0, top_k=0, min_new_tokens=0)


Weight = float | Sequence[float]
"""A value model's weight: one number for every prompt, or one per prompt."""


def value_guided_generate(
    reference_model,
    tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    weighted_values: Sequence[tuple[Weight, object]],
    settings: GuidanceSettings,
    *,
    beams: int = 1,
    rendered: bool = False,
    seed_groups: Sequence[Hashable] | None = None,
) -> list[Response]:
    """One response per prompt from the reference tilted by the weighted value models.

    Batched, seeded per prompt and ended by EOS / stop strings / max_new_tokens exactly as
    :func:`~paretoalign.generation.sampling.generate` (with ``beta=0`` it draws the same tokens as
    ``generate`` with ``top_k=k``); ``weighted_values`` are ``(weight, value model)`` pairs, a weight one
    number or one per prompt (rows of a batch may then weight the models differently).
    ``beams > 1``: beam search over the tilted scores instead of sampling (the best beam). ``seed_groups``: each
    row's preference when rows carry different ones (seeds as for a call per preference).
    """
    make_scorer, eos_ids = _scorer_factory(reference_model, tokenizer, config, prompts, weighted_values, settings)
    with _evaluation_modes(reference_model, weighted_values):
        return generate_with_scorer(make_scorer, tokenizer, prompts, guided_sampler_config(config), eos_ids=eos_ids,
                                    device=reference_model.device, beams=beams, rendered=rendered, scorer_rows=True,
                                    seed_groups=seed_groups)


def _scorer_factory(reference_model, tokenizer, config: GenerationConfig, prompts: Sequence[str], weighted_values,
                    settings: GuidanceSettings):
    """``make_scorer(rows)``: a fresh :class:`ValueGuidedScorer` for the prompts at ``rows``, and the EOS ids;
    checks the settings first."""
    config.validate()
    settings.check_vocabulary(reference_model.get_output_embeddings().weight.shape[0])
    for weight, _ in weighted_values:
        if not isinstance(weight, (int, float)) and len(weight) != len(prompts):
            raise ConfigError(f"got {len(weight)} weights of a value model for {len(prompts)} prompts; give one "
                              "weight or one per prompt")
    eos_ids = eos_token_ids(reference_model, tokenizer)

    def make_scorer(rows: Sequence[int]) -> ValueGuidedScorer:
        batch = [([_weight_of(weight, row) for row in rows], model) for weight, model in weighted_values]
        return ValueGuidedScorer(reference_model, batch, settings, temperature=config.temperature,
                                 eos_ids=eos_ids, eos_banned_steps=eos_banned_steps(config, settings))

    return make_scorer, eos_ids


def _weight_of(weight: Weight, row: int) -> float:
    return float(weight) if isinstance(weight, (int, float)) else float(weight[row])


def _evaluation_modes(reference_model, weighted_values) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for model in [reference_model, *(model for _, model in weighted_values)]:
        stack.enter_context(evaluation_mode(model))
    return stack


def final_values(model, sequences: Sequence[Sequence[int]], padding_value: int) -> torch.Tensor:
    """Each full token sequence's value (float32 ``(n,)``): the scalar head at its last token, or for a
    Q-head its output before the last token read at that token."""
    input_ids, attention_mask = pad_left(sequences, padding_value)
    prefix = _PrefixCache(model)
    device = next(model.parameters()).device
    hidden = prefix.forward(input_ids.to(device), attention_mask.to(device),
                            (attention_mask.cumsum(-1) - 1).clamp(min=0).to(device))
    if not is_token_value_model(model):
        return prefix.read(hidden[:, -1])[:, 0]
    return prefix.read(hidden[:, -2]).gather(-1, input_ids[:, -1:].to(device)).squeeze(-1)


def value_guided_beam_search(
    reference_model,
    tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    weighted_values: Sequence[tuple[Weight, object]],
    settings: GuidanceSettings,
    *,
    beams: int,
    candidates: int,
) -> list[list[Response]]:
    """MAVIS beam search: ``beams`` beams over the tilted scores, the ``candidates`` best finished beams
    per prompt, each with ``meta["value"]`` = Σ_i w_i V_i of its full text (the prompt's weights), best first."""
    make_scorer, eos_ids = _scorer_factory(reference_model, tokenizer, config, prompts, weighted_values, settings)
    prompt_ids = prompt_token_ids(tokenizer, prompts, config.system_prompt)
    padding = pad_id(tokenizer)
    ranked = []
    with torch.inference_mode(), _evaluation_modes(reference_model, weighted_values):
        for start in range(0, len(prompt_ids), config.batch_size):
            rows = list(range(start, min(start + config.batch_size, len(prompt_ids))))
            batch = [prompt_ids[row] for row in rows]
            input_ids, attention_mask = (t.to(reference_model.device) for t in pad_left(batch, padding))
            found = beam_search(make_scorer(rows), input_ids, attention_mask, beams=beams, num_return=candidates,
                                max_new_tokens=config.max_new_tokens, eos_ids=eos_ids)
            for row, ids, group in zip(rows, batch, found):
                weighted = [(_weight_of(weight, row), model) for weight, model in weighted_values]
                ranked.append(_ranked_beams(prompts[row], ids, group, weighted, tokenizer, padding))
    return ranked


def _ranked_beams(prompt: str, prompt_ids: list[int], group: Sequence[BeamCandidate], weighted_values, tokenizer,
                  padding: int) -> list[Response]:
    sequences = [prompt_ids + candidate.token_ids for candidate in group]
    total = torch.zeros(len(sequences))
    for weight, model in weighted_values:
        if weight:
            total = total + weight * final_values(model, sequences, padding).cpu()
    responses = []
    for candidate, value in zip(group, total.tolist()):
        decoded = Decoded(candidate.token_ids, [0.0] * len(candidate.token_ids), candidate.finish_reason)
        response = to_response(prompt, decoded, tokenizer, None)
        response.meta.update(beam_score=candidate.score, value=value)
        responses.append(response)
    return sorted(responses, key=lambda response: -response.meta["value"])
