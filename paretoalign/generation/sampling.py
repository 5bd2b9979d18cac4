"""Batched sampling from one causal LM: ``generate(model, tokenizer, prompts, config) -> [Response]``.

Runs the one decoding loop (``beam.generate_with_scorer`` over ``decoding.decode_loop``; see there why not
``model.generate``) with transformers' own temperature / top-k / top-p warpers. Each sequence draws from its own random
generator, seeded from ``(config.seed, prompt text, how often that prompt came before in the call)``,
so a sample does not depend on batch size or on the other prompts of the call (up to the float
rounding that padding can change), and a prompt given twice gets two different samples. A call that
serves several preferences passes ``seed_groups`` (each row's preference): occurrences then count per
group, so each row draws what a call for its preference alone would draw (batched sweeps and servers).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from contextvars import ContextVar

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ..core.errors import ConfigError
from .decoding import CausalLMScorer, Decoded, eos_token_ids, evaluation_mode
from .policy import GenerationConfig, Response

SEED_BITS = 63

StepListener = Callable[[Sequence[str], Sequence[int], Sequence[int]], None]
"""``listener(prompts, indices, tokens)`` after each decoding step of :func:`generate`: the call's prompts and,
for every row still decoding, its index in ``prompts`` and the token it just sampled (the server streams this)."""

_step_listener: ContextVar[StepListener | None] = ContextVar("paretoalign_step_listener", default=None)


@contextlib.contextmanager
def listen_to_steps(listener: StepListener) -> Iterator[None]:
    """Within the block, :func:`generate` calls made in this context report each step's tokens to ``listener``."""
    token = _step_listener.set(listener)
    try:
        yield
    finally:
        _step_listener.reset(token)


def reporting_steps(choose, prompts: Sequence[str], batch: Sequence[int]):
    """``choose`` that also tells the active step listener (if any) which token each prompt just got."""
    listener = _step_listener.get()
    if listener is None:
        return choose

    def report(scores: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, logprobs = choose(scores, rows)
        listener(prompts, [batch[row] for row in rows], tokens.tolist())
        return tokens, logprobs

    return report


def recording_scorer_logprobs(choose, store: list[list[float]], batch: Sequence[int]):
    """``choose`` that also appends log softmax(scores)[token] (the scorer's own distribution at T=1) of each row's
    token to ``store[prompt index]``."""

    def record(scores: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        distribution = torch.log_softmax(scores.float(), dim=-1)  # before ``choose``, which may warp in place
        tokens, logprobs = choose(scores, rows)
        own = distribution.gather(-1, tokens.unsqueeze(-1).to(distribution.device)).squeeze(-1)
        for row, value in zip(rows, own.tolist()):
            store[batch[row]].append(value)
        return tokens, logprobs

    return record


def sequence_seeds(seed: int | None, prompts: Sequence[str], groups: Sequence[Hashable] | None = None) -> list[int]:
    """One seed per prompt from ``(seed, prompt, occurrence)``; ``seed=None`` draws them from torch's RNG.

    ``groups`` (one key per prompt, e.g. its preference): the occurrence counts within the prompt's group, so
    each group's rows get the seeds a call with that group's rows alone would get (one group: the plain seeds).
    """
    if groups is not None and len(groups) != len(prompts):
        raise ConfigError(f"got {len(groups)} seed groups for {len(prompts)} prompts; give one per prompt")
    if seed is None:
        return torch.randint(0, 2**SEED_BITS - 1, (len(prompts),)).tolist()
    seen: Counter[tuple[Hashable, str]] = Counter()
    seeds = []
    for prompt, group in zip(prompts, groups if groups is not None else [None] * len(prompts)):
        key = f"{seed}\x00{seen[group, prompt]}\x00{prompt}".encode()
        seen[group, prompt] += 1
        seeds.append(int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> (64 - SEED_BITS))
    return seeds


def sampling_warpers(config: GenerationConfig) -> LogitsProcessorList:
    """transformers' warpers for ``config`` in its order: temperature, then top-k, then top-p."""
    warpers = LogitsProcessorList()
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k > 0:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers


class TokenSampler:
    """Chooses the next token: greedy, or a draw from the warped distribution by inverse CDF (over token ids
    in order) with one uniform per row and step, pre-drawn from that row's own generator.

    The distribution is transformers' warpers' (temperature, top-k, top-p). With top-k it is computed on the
    top-k tokens alone, as TopKLogitsWarper leaves nothing else: top-p's sort then runs over k tokens, not
    the vocabulary (on a CPU that sort costs about as much as the model's forward). Ties at the k-th score
    (kept by transformers too) take the whole-vocabulary path. Returns each token's log-probability under
    the distribution it was drawn from (0 for greedy). Called once per decoding step; EOS ids are masked
    out until ``config.min_new_tokens`` steps passed.
    """

    def __init__(
        self,
        config: GenerationConfig,
        seeds: Sequence[int],
        device: torch.device,
        eos_ids: Collection[int] = (),
    ) -> None:
        self.do_sample = config.do_sample
        self.temperature, self.top_k, self.top_p = config.temperature, config.top_k, config.top_p
        self.warpers = sampling_warpers(config)
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        steps = max(config.max_new_tokens, 1)
        self.uniforms = torch.stack(
            [torch.rand(steps, generator=g, device=device, dtype=torch.float64) for g in generators]
        )
        self.eos_ids = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
        self.eos_banned_steps = config.min_new_tokens
        self.step = 0

    def candidates(self, scores: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(ids, logprobs)``: the tokens that can be drawn, by id, and their log-probabilities under the
        warped distribution (-inf where truncated). ``ids`` is None for the whole vocabulary."""
        if 0 < self.top_k < scores.shape[-1]:
            scaled = scores / self.temperature if self.temperature != 1.0 else scores
            values, ids = scaled.topk(self.top_k, dim=-1)
            if not ((scaled >= values[:, -1:]).sum(dim=-1) > self.top_k).any():
                values = _top_p(values, self.top_p) if self.top_p < 1.0 else values
                ids, order = ids.sort(dim=-1)
                return ids, torch.log_softmax(values.gather(-1, order), dim=-1)
        return None, torch.log_softmax(self.warpers(None, scores), dim=-1)

    def __call__(self, scores: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step < self.eos_banned_steps:
            scores = scores.index_fill(-1, self.eos_ids, float("-inf"))
        step, self.step = self.step, self.step + 1
        if not self.do_sample:
            return scores.argmax(dim=-1), scores.new_zeros(scores.shape[0])
        ids, logprobs = self.candidates(scores)
        cumulative = logprobs.double().exp().cumsum(dim=-1)
        uniforms = self.uniforms[torch.tensor(rows, device=scores.device), step]
        targets = (uniforms * cumulative[:, -1])[:, None]
        picks = torch.searchsorted(cumulative, targets, right=True).squeeze(-1)
        picks = torch.minimum(picks, _last_possible_token(logprobs))[:, None]
        tokens = picks if ids is None else ids.gather(-1, picks)
        return tokens.squeeze(-1), logprobs.gather(-1, picks).squeeze(-1)


def _top_p(descending: torch.Tensor, top_p: float) -> torch.Tensor:
    """TopPLogitsWarper on scores sorted in descending order (the same arithmetic, on these tokens only)."""
    cumulative = descending.flip(-1).softmax(dim=-1).cumsum(dim=-1)
    removed = cumulative <= 1 - top_p
    removed[..., -1] = False
    return descending.masked_fill(removed.flip(-1), float("-inf"))


def _last_possible_token(logprobs: torch.Tensor) -> torch.Tensor:
    """Per row, the highest index with non-zero probability (guards a uniform rounding up to 1)."""
    possible = (logprobs > float("-inf")).int()
    return logprobs.shape[-1] - 1 - possible.flip(-1).argmax(dim=-1)


class StopStrings:
    """Says which rows' decoded text contains one of the stop strings, and where to cut a text."""

    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)

    def __call__(self, generated: Sequence[Sequence[int]]) -> list[bool]:
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [self.cut(text) is not None for text in texts]

    def cut(self, text: str) -> int | None:
        """Index where the earliest stop string starts in ``text``, or None."""
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        return min(found) if found else None


def to_response(prompt: str, decoded: Decoded, tokenizer, stops: StopStrings | None) -> Response:
    """A decoded row as a :class:`Response`: EOS kept in the ids but not the text, text cut at a stop string."""
    text_ids = decoded.token_ids[:-1] if decoded.finish_reason == "eos" else decoded.token_ids
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    if decoded.finish_reason == "stop":
        text = text[: stops.cut(text)]
    return Response(prompt, text, decoded.token_ids, decoded.logprobs, decoded.finish_reason)


def length_sorted_batches(prompt_ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, so little compute goes to padding."""
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    *,
    rendered: bool = False,
    seed_groups: Sequence[Hashable] | None = None,
    reference: bool = False,
) -> list[Response]:
    """Sample one response per prompt, in the order given, batched with left padding and a KV cache.

    Prompts are user messages rendered with the chat template (and ``config.system_prompt``) unless
    ``rendered`` says they are already model-ready text. Ends at EOS, a stop string or max_new_tokens.
    ``seed_groups``: each row's preference when one call serves several (see :func:`sequence_seeds`).
    ``reference``: the model is π_ref and the prompts are plain; each response records ``meta[REFERENCE_LOGPROBS]``.
    This is the one decoding loop (``beam.generate_with_scorer``) over the model's own next-token scores.
    """
    from .beam import generate_with_scorer  # beam builds on this module's sampler

    scorer = CausalLMScorer(model, max_new_tokens=config.max_new_tokens)  # every batch: a compiled step keeps its cache
    with evaluation_mode(model):
        return generate_with_scorer(lambda: scorer, tokenizer, prompts, config, eos_ids=eos_token_ids(model, tokenizer),
                                    device=model.device, rendered=rendered, seed_groups=seed_groups,
                                    record_reference=reference)
