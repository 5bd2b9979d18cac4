"""Beam search over any :class:`~paretoalign.generation.decoding.NextTokenScorer`, and prompt-level decoding
with a scorer of one's own (MOD's fused scorer, MAVIS's tilted one) by sampling or by beam search.

A beam's score is the sum of its tokens' log-probabilities, log_softmax of the scorer's scores (logits,
log-probabilities or any tilted score: the step distribution is softmax(scores)), or, for a scorer whose
``scores_are_increments`` is True (MOD's fused prefix score), the sum of the raw scores: each is the change
of a sequence score s(y) (≤ 0), so beams rank by s itself, not by renormalized steps; candidates are ranked
by ``score / length ** length_penalty`` (length counts the EOS token; ``length_penalty=0`` ranks by the
plain sum). Each step, the best ``beams`` continuations of every prompt go on; an EOS continuation counts
as a finished candidate when it ranks among them (as in Hugging Face's beam search). A prompt stops once it
has ``beams`` finished candidates and no running beam can still beat the worst of them (exact: a running
sum only falls, so its best reachable normalized score is bounded); at ``max_new_tokens`` running beams
finish with reason "length". This is Hugging Face's beam search with ``early_stopping="never"`` (tests
check it against ``generate(num_beams=...)``), over any scorer; with ``beams=1`` and ``length_penalty=0``
it is greedy decoding.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError
from .chat import pad_id, pad_left, prompt_token_ids
from .decoding import Decoded, NextTokenScorer, decode_loop
from .policy import REFERENCE_LOGPROBS, GenerationConfig, Response
from .sampling import (StopStrings, TokenSampler, length_sorted_batches, recording_scorer_logprobs, reporting_steps,
                       sequence_seeds, to_response)


@dataclass
class BeamCandidate:
    """A finished beam: its tokens (EOS kept last), each token's log-probability (or score increment), the sum,
    the rank score."""

    token_ids: list[int]
    logprobs: list[float]
    score: float
    normalized_score: float
    finish_reason: str = "length"  # "eos" | "length"


def _normalized(score: float, length: int, length_penalty: float) -> float:
    return score / (length**length_penalty)


def _best_reachable(score: float, length: int, max_length: int, length_penalty: float) -> float:
    """Upper bound of a running beam's normalized score at any length it may still reach (sums only fall)."""
    longest = max_length if length_penalty > 0 and score < 0 else length
    return _normalized(score, longest, length_penalty)


@dataclass
class _Beam:
    row: int  # row of the scorer state this beam extends
    token_ids: list[int]
    logprobs: list[float]
    score: float


class _PromptBeams:
    """The running beams and finished candidates of one prompt."""

    def __init__(self, width: int, length_penalty: float, max_new_tokens: int) -> None:
        self.width = width
        self.length_penalty = length_penalty
        self.max_new_tokens = max_new_tokens
        self.running: list[_Beam] = []
        self.finished: list[BeamCandidate] = []

    def finish(self, beam: _Beam, reason: str) -> None:
        """Add ``beam`` as a finished candidate, keeping only the ``width`` best."""
        normalized = _normalized(beam.score, len(beam.token_ids), self.length_penalty)
        self.finished.append(BeamCandidate(beam.token_ids, beam.logprobs, beam.score, normalized, reason))
        self.finished.sort(key=lambda candidate: -candidate.normalized_score)
        del self.finished[self.width :]

    def done(self) -> bool:
        """No running beam can beat the worst kept candidate any more (or none is left)."""
        if not self.running:
            return True
        if len(self.finished) < self.width:
            return False
        worst = self.finished[-1].normalized_score
        return all(
            _best_reachable(beam.score, len(beam.token_ids), self.max_new_tokens, self.length_penalty) <= worst
            for beam in self.running
        )


def _expand(beams: _PromptBeams, logprobs: torch.Tensor, eos_ids: Collection[int]) -> None:
    """One step for one prompt: ``logprobs`` is ``(rows, vocab)`` of its running beams' rows, in order."""
    width = beams.width
    parents = torch.tensor([beam.score for beam in beams.running], dtype=torch.float64, device=logprobs.device)
    totals = (parents[:, None] + logprobs.double()).flatten()
    values, flat = totals.topk(min(width * (1 + len(eos_ids)), totals.numel()))
    token_logprobs = logprobs.flatten()[flat].tolist()
    vocab = logprobs.shape[-1]
    running = []
    for rank, (total, index, token_logprob) in enumerate(zip(values.tolist(), flat.tolist(), token_logprobs)):
        if total == -math.inf or len(running) == width:
            break
        parent, token = beams.running[index // vocab], index % vocab
        beam = _Beam(parent.row, parent.token_ids + [token], parent.logprobs + [token_logprob], total)
        if token in eos_ids:
            if rank < width:
                beams.finish(beam, "eos")
        else:
            running.append(beam)
    beams.running = running


def beam_search(
    scorer: NextTokenScorer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    beams: int,
    max_new_tokens: int,
    eos_ids: Collection[int],
    num_return: int = 1,
    length_penalty: float = 1.0,
    min_new_tokens: int = 0,
) -> list[list[BeamCandidate]]:
    """The ``num_return`` best finished candidates of each left-padded prompt, best first (module doc).

    EOS ids cannot end a beam before ``min_new_tokens`` tokens. The scorer must accept repeated rows in
    ``keep_rows`` (a prefix continued by two beams).
    """
    if beams < 1 or not 1 <= num_return <= beams:
        raise ConfigError(f"need beams >= 1 and 1 <= num_return <= beams, got beams={beams}, num_return={num_return}")
    prompts = [_PromptBeams(beams, length_penalty, max_new_tokens) for _ in range(input_ids.shape[0])]
    if max_new_tokens <= 0:
        return [[BeamCandidate([], [], 0.0, 0.0)] for _ in prompts]
    for row, state in enumerate(prompts):
        state.running = [_Beam(row, [], [], 0.0)]
    increments = getattr(scorer, "scores_are_increments", False)
    scores = scorer.start(input_ids, attention_mask)
    eos_index = torch.tensor(sorted(eos_ids), dtype=torch.long, device=scores.device)
    active = list(range(len(prompts)))
    for step in range(max_new_tokens):
        logprobs = scores.float() if increments else torch.log_softmax(scores.float(), dim=-1)
        if step < min_new_tokens:
            logprobs = logprobs.index_fill(-1, eos_index, -math.inf)
        for index in active:
            state = prompts[index]
            rows = torch.tensor([beam.row for beam in state.running], device=logprobs.device)
            _expand(state, logprobs[rows], eos_ids)
            if step == max_new_tokens - 1:
                for beam in state.running:
                    state.finish(beam, "length")
                state.running = []
        active = [index for index in active if not prompts[index].done()]
        if not active:
            break
        scores = _advance(scorer, [prompts[index] for index in active], scores.device)
    return [state.finished[:num_return] for state in prompts]


def _advance(scorer: NextTokenScorer, states: Sequence[_PromptBeams], device: torch.device) -> torch.Tensor:
    """Copy each running beam's parent row into place, feed its last token, and renumber the beams' rows."""
    running = [beam for state in states for beam in state.running]
    scorer.keep_rows(torch.tensor([beam.row for beam in running], device=device))
    for row, beam in enumerate(running):
        beam.row = row
    return scorer.extend(torch.tensor([beam.token_ids[-1] for beam in running], device=device))


ScorerFactory = Callable[..., NextTokenScorer]


def generate_with_scorer(
    make_scorer: ScorerFactory,
    tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    *,
    eos_ids: Collection[int],
    device: torch.device,
    beams: int = 1,
    length_penalty: float = 1.0,
    rendered: bool = False,
    scorer_rows: bool = False,
    seed_groups: Sequence[Hashable] | None = None,
    record_reference: bool = False,
) -> list[Response]:
    """One response per prompt from a fresh ``make_scorer()`` per batch, batched like ``generate``; a scorer
    that is a context manager is entered for its batch's decode (set-up and clean-up once per batch).
    ``scorer_rows``: call ``make_scorer(rows)`` with the indices of the batch's prompts instead, for scorers
    with per-prompt settings (MAVIS's per-row value weights, MOD's per-row policy weights). ``seed_groups``: each
    row's preference, so that rows draw what a call per preference would (:func:`~.sampling.sequence_seeds`).
    ``record_reference``: the scorer is π_ref on plain prompts; sampled responses record its log-probabilities at
    T=1 in ``meta[REFERENCE_LOGPROBS]``.

    ``beams == 1``: greedy or seeded sampling with ``TokenSampler`` (the same seeds as ``generate``);
    ``beams > 1``: beam search, the best candidate (deterministic, so its ``logprobs`` are 0 like greedy
    decoding's; the beam's own sum of log-probabilities is in ``meta["beam_score"]``).
    """
    config.validate()
    if beams > 1 and config.stop:
        raise ConfigError("stop strings are not supported with beam search; drop them or use beams=1")
    prompts = list(prompts)
    prompt_ids = prompt_token_ids(tokenizer, prompts, config.system_prompt, rendered=rendered)
    empty = [i for i, ids in enumerate(prompt_ids) if not ids]
    if empty:
        raise ConfigError(f"prompt {empty[0]} is empty after tokenization; give it some text")
    seeds = sequence_seeds(config.seed, prompts, seed_groups)
    stops = StopStrings(tokenizer, config.stop) if config.stop else None
    responses: list[Response | None] = [None] * len(prompts)
    reference_logprobs: list[list[float]] = [[] for _ in prompts]
    batches = length_sorted_batches(prompt_ids, config.batch_size)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not config.progress):
            input_ids, attention_mask = pad_left([prompt_ids[i] for i in batch], pad_id(tokenizer))
            padded = (input_ids.to(device), attention_mask.to(device))
            scorer = make_scorer(batch) if scorer_rows else make_scorer()
            with scorer if isinstance(scorer, contextlib.AbstractContextManager) else contextlib.nullcontext():
                if beams == 1:
                    sampler = reporting_steps(TokenSampler(config, [seeds[i] for i in batch], device, eos_ids),
                                              prompts, batch)
                    if record_reference:
                        sampler = recording_scorer_logprobs(sampler, reference_logprobs, batch)
                    decoded = decode_loop(scorer, sampler, *padded, max_new_tokens=config.max_new_tokens,
                                          eos_ids=eos_ids, is_stopped=stops)
                    for index, result in zip(batch, decoded):
                        responses[index] = to_response(prompts[index], result, tokenizer, stops)
                        if record_reference:
                            responses[index].meta[REFERENCE_LOGPROBS] = reference_logprobs[index]
                else:
                    found = beam_search(scorer, *padded, beams=beams, max_new_tokens=config.max_new_tokens,
                                        eos_ids=eos_ids, length_penalty=length_penalty,
                                        min_new_tokens=config.min_new_tokens)
                    for index, (best,) in zip(batch, found):
                        responses[index] = _beam_response(prompts[index], best, tokenizer)
    return responses


def _beam_response(prompt: str, best: BeamCandidate, tokenizer) -> Response:
    """The best beam as a Response: point-mass log-probabilities (0), its score in ``meta["beam_score"]``."""
    decoded = Decoded(best.token_ids, [0.0] * len(best.token_ids), best.finish_reason)
    response = to_response(prompt, decoded, tokenizer, None)
    response.meta["beam_score"] = best.score
    return response
