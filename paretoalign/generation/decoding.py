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
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

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
    changes the rows keeps them in step.
    """

    def __init__(self, model, **forward_kwargs) -> None:
        self.model = model
        self.forward_kwargs = forward_kwargs
        self.cache = None
        self.attention_mask: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **self.forward_kwargs,
        )
        self.cache = output.past_key_values
        return output.logits[:, -1].float()

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prefill the cache with the prompts; padded positions get no position of their own."""
        self.attention_mask = attention_mask
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = position_ids[:, -1] + 1
        return self._forward(input_ids, position_ids)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row through the cached model."""
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        position_ids = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(tokens[:, None], position_ids)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` of the cache, mask and positions (finished rows cost nothing more; repeats copy)."""
        rows = rows.to(self.attention_mask.device)
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


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
