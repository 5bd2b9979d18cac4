"""The batcher: concurrent requests wait in a bounded queue and leave it in batches.

A batch is formed when the oldest request has waited ``batch_wait_s`` or enough compatible rows are queued
to fill ``max_batch_size``. Rows are compatible when they sample alike (same GenerationConfig, system prompt
and constraints) and, for a policy that cannot mix preferences in one batch, ask for the same preference.
Requests with a seed never share a batch with another request for the same prompt, so each answer is the
one the request gets when served alone (seeds are per (seed, prompt, occurrence), ``generation.sampling``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import ParetoAlignError
from ...core.preference import Constraint, Preference
from ...generation import GenerationConfig


class QueueFullError(ParetoAlignError):
    """The request queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Delta:
    """New text of one answer of a streaming request."""

    row: int
    text: str


@dataclass
class Answer:
    """One finished answer: its text, why it ended, its token count and what the policy did with the preference."""

    text: str
    finish_reason: str
    completion_tokens: int
    steering: Any = None
    scores: dict[str, Any] | None = None


@dataclass
class Finished:
    answers: list[Answer]


@dataclass
class Failed:
    error: Exception


@dataclass(eq=False)
class Job:
    """One request: a prompt per answer asked for (``n`` copies for ``n`` answers), how to sample them, and the
    queue its events (``Delta``, then ``Finished`` or ``Failed``) go to, in the server's event loop."""

    prompts: list[str]
    preference: Preference | None
    config: GenerationConfig
    constraints: tuple[Constraint, ...] = ()
    stream: bool = False
    want_scores: bool = False
    arrived: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def key(self, mixes_preferences: bool) -> tuple:
        """Rows of jobs with equal keys can share a batch."""
        sampling = dataclasses.astuple(dataclasses.replace(self.config, batch_size=1, progress=False))
        return sampling, self.constraints, None if mixes_preferences else self.preference


class Scheduler:
    """A bounded FIFO of jobs handed out in batches (see the module docstring). Lives in one event loop."""

    def __init__(self, *, max_batch_size: int, batch_wait_s: float, max_queue: int, mixes_preferences: bool) -> None:
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_queue = max_queue
        self.mixes_preferences = mixes_preferences
        self.pending: deque[Job] = deque()
        self._changed = asyncio.Event()
        self._batch_seconds = 1.0

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFullError (with a Retry-After estimate) when ``max_queue`` jobs wait."""
        if len(self.pending) >= self.max_queue:
            raise QueueFullError(f"the request queue is full ({self.max_queue} waiting); retry later",
                                 self.retry_after())
        self.pending.append(job)
        self._changed.set()

    def cancel(self, job: Job) -> None:
        """Forget ``job`` (its client left or timed out): a queued job frees its place at once."""
        job.cancelled = True
        if job in self.pending:
            self.pending.remove(job)
            self._changed.set()

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one batch's worth: the last batch time per batch queued."""
        rows = sum(len(job.prompts) for job in self.pending)
        return max(1, math.ceil(self._batch_seconds * (1 + rows / self.max_batch_size)))

    def record_batch_time(self, seconds: float) -> None:
        self._batch_seconds = seconds

    async def next_batch(self) -> list[Job]:
        """Wait for the next batch: the oldest job and every compatible job that fits after it."""
        while True:
            if self.pending:
                first = self.pending[0]
                batch = self._compatible(first)
                waited = time.monotonic() - first.arrived
                if sum(len(job.prompts) for job in batch) >= self.max_batch_size or waited >= self.batch_wait_s:
                    for job in batch:
                        self.pending.remove(job)
                    return batch
                timeout = self.batch_wait_s - waited
            else:
                timeout = None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _compatible(self, first: Job) -> list[Job]:
        key = first.key(self.mixes_preferences)
        batch, rows, prompts = [], 0, set()
        for job in self.pending:
            if job.key(self.mixes_preferences) != key or rows + len(job.prompts) > self.max_batch_size:
                continue
            if first.config.seed is not None and prompts.intersection(job.prompts):
                continue  # same seed and prompt in one call would shift the second one's sample
            batch.append(job)
            rows += len(job.prompts)
            prompts.update(job.prompts)
        return batch
