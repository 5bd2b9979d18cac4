"""The engine behind one served model: its policy, a scheduler, and one worker thread that runs batches.

One worker per model means a policy never runs two ``generate`` calls at once (stateful policies such as a
soup's in-place merge are safe). The worker streams tokens through ``generation.listen_to_steps``: tokens
are decoded into text per answer, holding back what could still become a stop string or a split character,
and the final ``Response.text`` is what the answer ends as.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ...core.errors import ParetoAlignError
from ...core.preference import Preference
from ...objectives.registry import score_report
from ...generation.decoding import eos_token_ids
from ...generation.policy import STEERING
from ...generation.sampling import listen_to_steps
from .scheduler import Answer, Delta, Failed, Finished, Job, Scheduler

log = logging.getLogger("paretoalign.server")


@dataclass
class ServedModel:
    """A policy as the server lists and runs it.

    ``objectives``: what a request may weight (empty when the policy ignores preferences); ``default_preference``
    answers requests without one; ``mixes_preferences``: the policy batches rows with different preferences
    itself (otherwise the scheduler groups rows by preference); ``constraint_objectives``: what ``constraints``
    may bound (None: the policy takes no constraints); ``scorers``: the objectives, by name, that score answers
    for ``return_scores`` and describe themselves in ``/v1/models``.
    """

    id: str
    policy: Any
    method: str
    base_model: str | None = None
    objectives: list[str] = field(default_factory=list)
    default_preference: Preference | None = None
    mixes_preferences: bool = False
    constraint_objectives: list[str] | None = None
    scorers: dict[str, Any] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def tokenizer(self):
        return self.policy.reference()[1]

    @property
    def context_length(self) -> int | None:
        """The model's maximum sequence length, when its config says."""
        return getattr(self.policy.reference()[0].config, "max_position_embeddings", None)


def describe_policy(model_id: str, policy: Any, manifest: dict[str, Any] | None = None,
                    scorers: Sequence[Any] | None = None) -> ServedModel:
    """A :class:`ServedModel` for ``policy`` (and its run manifest): method, base model, objectives, defaults.
    ``scorers`` (a run's objectives, with its normalization statistics) default to the objectives by name."""
    manifest = manifest or {}
    base_model = manifest.get("base_model") or manifest.get("fingerprint", {}).get("base_model")
    objectives = list(policy.objectives) if policy.objectives is not None else []
    default = getattr(policy, "default_preference", None)
    if default is None and objectives:
        default = Preference(tuple((name, 1.0 / len(objectives)) for name in objectives))
    return ServedModel(
        id=model_id,
        policy=policy,
        method=str(manifest.get("method") or policy.name),
        base_model=base_model or getattr(policy.reference()[0], "name_or_path", None) or None,
        objectives=objectives,
        default_preference=default,
        mixes_preferences=policy.objectives is None or bool(getattr(policy, "mixes_preferences", False)),
        constraint_objectives=getattr(policy, "constraint_objectives", None),
        scorers={objective.name: objective for objective in scorers or _build_scorers(objectives)},
    )


def _build_scorers(names: Sequence[str]) -> list[Any]:
    """The named objectives as scorers; one that cannot be built is left out (and logged)."""
    from ...objectives import get_objective

    scorers = []
    for name in names:
        try:
            scorers.append(get_objective(name))
        except ParetoAlignError as error:
            log.warning("objective %r cannot score answers: %s", name, error)
    return scorers


class _AnswerStream:
    """Turns one answer's sampled tokens into text deltas, holding back a possible stop-string start."""

    def __init__(self, job: Job, row: int, tokenizer, eos_ids: set[int], emit) -> None:
        self.job, self.row, self.tokenizer, self.eos_ids, self.emit = job, row, tokenizer, eos_ids, emit
        self.token_ids: list[int] = []
        self.sent = ""
        self.stopped = False
        self.hold = max((len(stop) for stop in job.config.stop), default=1) - 1

    def push(self, token: int) -> None:
        if self.stopped or self.job.cancelled or token in self.eos_ids:
            return
        self.token_ids.append(token)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cut = [i for i in (text.find(stop) for stop in self.job.config.stop) if i >= 0]
        if cut:
            text, self.stopped = text[: min(cut)], True
        elif self.hold:
            text = text[: len(text) - self.hold]
        text = text.rstrip("\ufffd")  # a multi-byte character split across tokens waits for its last byte
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.emit(self.job, Delta(self.row, text[len(self.sent):]))
            self.sent = text

    def rest(self, final: str) -> str:
        """What is left to send of the answer's final text."""
        if not final.startswith(self.sent):
            log.warning("streamed text of an answer is not a prefix of its final text; sending no more of it")
            return ""
        return final[len(self.sent):]


class Engine:
    """Runs one served model: ``submit`` jobs from the event loop; ``start``/``stop`` the batching task."""

    def __init__(self, model: ServedModel, *, max_batch_size: int = 32, batch_wait_s: float = 0.01,
                 max_queue: int = 256) -> None:
        self.model = model
        self.scheduler = Scheduler(max_batch_size=max_batch_size, batch_wait_s=batch_wait_s, max_queue=max_queue,
                                   mixes_preferences=model.mixes_preferences)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{model.id}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._serve(), name=f"engine-{self.model.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: Job) -> None:
        self.scheduler.submit(job)

    def cancel(self, job: Job) -> None:
        self.scheduler.cancel(job)

    async def _serve(self) -> None:
        while True:
            batch = await self.scheduler.next_batch()
            started = time.perf_counter()
            await self._loop.run_in_executor(self.executor, self._run_batch, batch)
            self.scheduler.record_batch_time(time.perf_counter() - started)
            self.batches += 1

    def _emit(self, job: Job, event: Delta | Finished | Failed) -> None:
        """Hand ``event`` to ``job``'s queue in the event loop (called from the worker thread)."""
        self._loop.call_soon_threadsafe(job.events.put_nowait, event)

    # ------------------------------------------------------------------------------------ worker thread

    def _run_batch(self, jobs: Sequence[Job]) -> None:
        jobs = [job for job in jobs if not job.cancelled]
        if not jobs:
            return
        try:
            answers = self._generate(jobs)
        except ParetoAlignError as error:
            if len(jobs) == 1:
                self._emit(jobs[0], Failed(error))
            else:  # one job's preference may not suit the policy: answer the others, fail only that one
                for job in jobs:
                    self._run_batch([job])
            return
        except Exception as error:  # noqa: BLE001 - the server answers 500 and keeps serving
            log.exception("batch of %d requests failed", len(jobs))
            for job in jobs:
                self._emit(job, Failed(error))
            return
        for job, job_answers in zip(jobs, answers):
            self._emit(job, Finished(job_answers))

    def _generate(self, jobs: Sequence[Job]) -> list[list[Answer]]:
        """One ``policy.generate`` call for every row of ``jobs``; the answers per job."""
        policy = self.model.policy
        prompts = [prompt for job in jobs for prompt in job.prompts]
        preferences = [job.preference for job in jobs for _ in job.prompts]
        preference = preferences if self.model.mixes_preferences else preferences[0]
        config = replace(jobs[0].config, batch_size=max(len(prompts), 1))
        options = {"constraints": list(jobs[0].constraints)} if jobs[0].constraints else {}
        streams = self._streams(jobs)
        with self._listening(prompts, streams):
            responses = policy.generate(prompts, preference, config, **options)
        scores = self._scores(jobs, prompts, responses)
        answers, row = [], 0
        for job in jobs:
            job_answers = []
            for index in range(len(job.prompts)):
                response, stream = responses[row], streams[row]
                if stream is not None:
                    rest = stream.rest(response.text)
                    if rest:
                        self._emit(job, Delta(index, rest))
                job_answers.append(Answer(response.text, response.finish_reason, len(response.token_ids),
                                          response.meta.get(STEERING), scores[row]))
                row += 1
            answers.append(job_answers)
        return answers

    def _streams(self, jobs: Sequence[Job]) -> list[_AnswerStream | None]:
        if not any(job.stream for job in jobs):
            return [None] * sum(len(job.prompts) for job in jobs)
        model, tokenizer = self.model.policy.reference()
        eos = eos_token_ids(model, tokenizer)
        return [_AnswerStream(job, index, tokenizer, eos, self._emit) if job.stream else None
                for job in jobs for index in range(len(job.prompts))]

    @contextlib.contextmanager
    def _listening(self, prompts: Sequence[str], streams: Sequence[_AnswerStream | None]):
        """Stream tokens while the policy decodes all rows in one call (a call over other rows is not ours)."""
        if not any(streams):
            yield
            return

        def listener(call_prompts: Sequence[str], indices: Sequence[int], tokens: Sequence[int]) -> None:
            if len(call_prompts) != len(prompts):
                return
            for index, token in zip(indices, tokens):
                if streams[index] is not None:
                    streams[index].push(token)

        with listen_to_steps(listener):
            yield

    def _scores(self, jobs: Sequence[Job], prompts: Sequence[str], responses) -> list[dict[str, Any] | None]:
        """Each answer's objective scores (oriented: higher is better) for the jobs that asked for them."""
        wanted = [job.want_scores for job in jobs for _ in job.prompts]
        if not any(wanted):
            return [None] * len(prompts)
        rows = [i for i, want in enumerate(wanted) if want]
        report = score_report(self.model.scorers.values(), [prompts[i] for i in rows], [responses[i].text for i in rows])
        scores: list[dict[str, Any] | None] = [None] * len(prompts)
        for i, row in zip(rows, report):
            scores[i] = row
        return scores
