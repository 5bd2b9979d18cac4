"""The token-by-token decoding loop every sampler in paretoalign runs on.

Why our own loop instead of Hugging Face ``model.generate``: ``generate`` with ``output_scores=True``
does return the processed scores of each step, but (1) it draws from one global random stream, so a
sequence's sample depends on which other prompts share its batch; (2) it keeps computing finished rows
until the longest one ends; and (3) the methods built on this layer need control of every step that
``generate`` does not give: MOD fuses the log-probabilities of several models, each with its own KV
cache, and MAVIS re-scores the top-k candidates of each step with value models. Here a step is split
in two small pieces: a :class:`NextTokenScorer` owns the model(s) and their KV caches and says how
much each next token is worth; a chooser turns those scores into the distribution actually sampled
from and draws a token from it. Plain sampling is ``CausalLMScorer`` + ``TokenSampler``; MOD and MAVIS
only bring their own scorer. The model forward and its cache are still transformers' own.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import Cache, DynamicCache, PreTrainedModel, StaticCache
from transformers.cache_utils import StaticLayer

from ..core.errors import ConfigError

Chooser = Callable[[torch.Tensor, Sequence[int]], tuple[torch.Tensor, torch.Tensor]]
"""``choose(scores (rows, vocab), rows) -> (tokens (rows,), logprobs (rows,))``; ``rows`` are the
indices in the original batch of the rows still decoding, so a chooser can keep per-sequence state."""

StopCheck = Callable[[Sequence[Sequence[int]]], Sequence[bool]]
"""``is_stopped(generated token ids of each row still decoding) -> stop this row?``"""


class NextTokenScorer(Protocol):
    """Next-token scores (logits or log-probabilities, float32, ``(rows, vocab)``) of a batch being
    decoded; the scorer keeps whatever per-row state it needs (KV caches) in step with the loop."""

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Read the left-padded prompts; return the scores of the first new token."""
        ...

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row; return the scores of the next one."""
        ...

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Make the state's rows ``rows`` (indices into the current rows), in that order: rows not listed
        are dropped, and a row listed twice is copied (beam search continues one prefix in two beams)."""
        ...


class CausalLMScorer:
    """A causal LM's next-token logits, with transformers' KV cache and left-padding-aware positions.

    ``forward_kwargs`` go to every forward call (e.g. PEFT's per-row ``adapter_names``); a wrapper that
    changes the rows keeps them in step. ``max_new_tokens`` (the most :meth:`extend` calls after each
    :meth:`start`) lets the scorer preallocate its cache; ``mode`` picks the decode step (:func:`decode_mode`).

    Dynamic and static caches drop finished rows at once. A compiled step keeps its shapes instead (a new
    shape would mean a new graph): finished rows stay in the batch, unused, and a later :meth:`start` with
    as many rows and prompts that fit reuses the same cache (cleared), so CUDA graphs are recorded once.
    """

    def __init__(self, model, *, max_new_tokens: int | None = None, mode: str | None = None, **forward_kwargs) -> None:
        self.model = model
        self.forward_kwargs = forward_kwargs
        self.capacity = max_new_tokens
        self.mode = decode_mode(model, mode, length_known=max_new_tokens is not None, compilable=not forward_kwargs)
        self.cache_keyword = cache_keyword(model)
        self.cache: Cache | None = None
        self.attention_mask: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None  # compiled: the cache row of each row still decoding

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, step: Callable) -> torch.Tensor:
        output = step(
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_keyword: self.cache},
            **self.forward_kwargs,
        )
        return output.logits[:, -1].float()

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prefill the cache with the prompts; padded positions get no position of their own."""
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = position_ids[:, -1] + 1
        self.rows = torch.arange(input_ids.shape[0], device=input_ids.device) if self.mode == "compiled" else None
        if self.mode == "dynamic":
            self.cache = DynamicCache(config=self.model.config)
            self.attention_mask = attention_mask
        else:
            length = self._static_cache(*input_ids.shape)
            # The mask covers every slot from the start (causality hides the ones not written yet).
            self.attention_mask = F.pad(attention_mask, (0, length - input_ids.shape[1]), value=1)
        return self._forward(input_ids, position_ids, self.model)

    def _static_cache(self, rows: int, prompt_length: int) -> int:
        """Make ``self.cache`` an empty StaticCache for these rows (the previous one, when it fits a compiled
        step); return its length."""
        needed = prompt_length + self.capacity
        cache = self.cache
        if self.mode == "compiled" and isinstance(cache, StaticCache) and cache.get_max_length() >= needed:
            if all(layer.is_initialized and layer.batch_size == rows for layer in cache.layers):
                cache.reset()
                return cache.get_max_length()
        if self.mode == "compiled":  # lengths in steps of 256, so later batches fit the same cache
            needed = -(-needed // 256) * 256
        self.cache = StaticCache(config=self.model.config, max_cache_len=needed)
        return needed

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row through the cached model."""
        if self.mode == "dynamic":
            ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
            self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        position_ids = self.next_position[:, None]
        self.next_position = self.next_position + 1
        if self.mode != "compiled":
            return self._forward(tokens[:, None], position_ids, self.model)
        every_row = torch.zeros_like(self.next_position).index_copy_(0, self.rows, tokens)
        try:
            logits = self._forward(every_row[:, None], position_ids, compiled_call(self.model))
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to the same step, eager
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); decoding without it",
                          RuntimeWarning, stacklevel=2)
            _COMPILE_FAILED.add(self.model)
            self.mode = "static"
            logits = self._forward(every_row[:, None], position_ids, self.model)
        rows = self.rows
        if self.mode == "static":  # after a fallback finished rows leave the cache, as in static mode
            self.keep_rows(torch.arange(len(rows), device=rows.device))
        return logits[rows]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` of the cache, mask and positions (finished rows cost nothing more; repeats copy).
        A compiled step only renumbers its rows, unless some repeat (beam search): then the shape changes."""
        rows = rows.to(self.attention_mask.device)
        if self.rows is not None:
            rows = self.rows[rows]
            if self.mode == "compiled" and rows.unique().numel() == rows.numel():
                self.rows = rows
                return
            self.rows = torch.arange(len(rows), device=rows.device) if self.mode == "compiled" else None
        if self.mode == "dynamic":
            self.cache.batch_select_indices(rows)
        else:
            select_static_rows(self.cache, rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


DECODE_MODES = ("dynamic", "static", "compiled")
_COMPILE_FAILED: weakref.WeakSet = weakref.WeakSet()


def decode_mode(model, requested: str | None = None, *, length_known: bool = True, compilable: bool = True) -> str:
    """How :class:`CausalLMScorer` runs a decode step: "dynamic" (transformers' growing DynamicCache),
    "static" (a preallocated StaticCache: no copy of the whole cache per step) or "compiled" (static, and
    the one-token step through ``torch.compile``, built once per model; a compiler failure falls back to
    "static" with a warning).

    ``requested`` (else the ``PARETOALIGN_DECODE`` variable, else "auto") is a wish, narrowed to what fits:
    "dynamic" when the length is unknown or the model's cache is not all full-attention layers (sliding
    windows, linear attention); not "compiled" for wrapped models or extra forward arguments (PEFT).
    "auto" is "compiled" on CUDA, where a step is launch-bound, and "static" elsewhere (on CPUs compiling
    costs minutes and saves little: see ``benchmarks/generation_throughput.py``).
    """
    requested = requested or os.environ.get("PARETOALIGN_DECODE") or "auto"
    if requested not in (*DECODE_MODES, "auto"):
        raise ConfigError(f"unknown decode mode {requested!r}; choose auto, {', '.join(DECODE_MODES)}")
    if requested == "dynamic" or not length_known or not _full_attention_only(model):
        return "dynamic"
    if requested == "auto":
        requested = "compiled" if model.device.type == "cuda" else "static"
    can_compile = compilable and isinstance(model, PreTrainedModel) and model not in _COMPILE_FAILED
    return "compiled" if requested == "compiled" and can_compile else "static"


def _full_attention_only(model) -> bool:
    """True when transformers' StaticCache for ``model`` is plain full-attention layers (rows selectable)."""
    try:
        layers = StaticCache(config=model.config, max_cache_len=1).layers
    except (ValueError, KeyError, AttributeError):
        return False
    return bool(layers) and all(type(layer) is StaticLayer for layer in layers)


def select_static_rows(cache: Cache, rows: torch.Tensor) -> None:
    """Keep ``rows`` (repeats copy) of a StaticCache whose layers are all full-attention ``StaticLayer``s;
    the new tensors keep a fixed address for compiled steps, as transformers' own are."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]
            layer.batch_size = rows.shape[0]
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)


def compiled_call(model) -> Callable:
    """``model``'s forward through ``torch.compile`` with transformers' default settings (CUDA graphs), built
    once per model and shared with HF ``generate``'s own compiled decoding."""
    return model.get_compiled_call(None)


def cache_keyword(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` since transformers 5.24 (the old
    ``past_key_values`` then warns that it goes away in 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@dataclass
class Decoded:
    """What the loop produced for one row: the sampled ids, their log-probabilities, why it ended."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "length"


def decode_loop(
    scorer: NextTokenScorer,
    choose: Chooser,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int],
    is_stopped: StopCheck | None = None,
) -> list[Decoded]:
    """Decode a left-padded batch token by token until each row samples an EOS id (kept as its last
    token, finish "eos"), ``is_stopped`` says so ("stop"), or ``max_new_tokens`` are out ("length").

    Finished rows leave the batch (and the scorer's cache) at once.
    """
    results = [Decoded([], []) for _ in range(input_ids.shape[0])]
    if max_new_tokens <= 0:
        return results
    active = list(range(input_ids.shape[0]))
    scores = scorer.start(input_ids, attention_mask)
    for step in range(max_new_tokens):
        tokens, logprobs = choose(scores, active)
        finished = _record_step(results, active, tokens.tolist(), logprobs.tolist(), eos_ids, is_stopped)
        if step == max_new_tokens - 1 or all(finished):
            break
        if any(finished):
            keep = [i for i, done in enumerate(finished) if not done]
            keep_index = torch.tensor(keep, device=tokens.device)
            scorer.keep_rows(keep_index)
            active = [active[i] for i in keep]
            tokens = tokens[keep_index]
        scores = scorer.extend(tokens)
    return results


def _record_step(
    results: list[Decoded],
    active: list[int],
    tokens: list[int],
    logprobs: list[float],
    eos_ids: Collection[int],
    is_stopped: StopCheck | None,
) -> list[bool]:
    """Append this step's token to each active row; mark and return which rows ended here."""
    for row, token, logprob in zip(active, tokens, logprobs):
        results[row].token_ids.append(token)
        results[row].logprobs.append(logprob)
    finished = [token in eos_ids for token in tokens]
    stopped = is_stopped([results[row].token_ids for row in active]) if is_stopped else [False] * len(active)
    for i, row in enumerate(active):
        if finished[i]:
            results[row].finish_reason = "eos"
        elif stopped[i]:
            results[row].finish_reason = "stop"
            finished[i] = True
    return finished


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return ids


@contextlib.contextmanager
def evaluation_mode(model) -> Iterator[None]:
    """Run with dropout off (``model.eval()``), then restore the model's previous training flag."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
