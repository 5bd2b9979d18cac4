"""Base-model answers to train prompts, the offline data of RiC and of the DPO-trained per-objective policies.

Each prompt is answered ``samples`` times, cycling through the plain prompt and the prompt with one objective's
preference instruction appended (the user turn is where the default model listens). The spread of rewards this
gives is what RiC learns to condition on and what separates a DPO pair's chosen from its rejected answer; the
records keep the plain prompt, so the trained model learns to answer it that way unasked.

``data/samples.jsonl`` of a run holds them; another run of the same base model can take them over
(:func:`reuse_samples`: RiC's ``samples_from``) instead of sampling the same answers again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError
from ...core.preference import Preference
from ...core.rundir import RunDirectory
from .instructions import INSTRUCTIONS, steering_text

if TYPE_CHECKING:
    from ...objectives.base import Objective

SAMPLES_FILE = "data/samples.jsonl"
SAMPLES_STAGE = "samples"
GENERATION_BATCH = 128
"""Rows decoded together: a decoding step's cost grows far slower than its rows on a CPU (124 ms at 10 rows, 313 ms
at 110: benchmarks/sweep_throughput.py), so the quick presets' 128 samples go in one batch."""


@dataclass(frozen=True)
class Sampling:
    """How the base model answers: answers per prompt, length, temperature, seed, and whether to steer them."""

    samples: int
    max_new_tokens: int
    temperature: float
    seed: int
    steered: bool = True


STEERED_BY = "steered_by"
"""A sample's ``meta`` key: the objective whose instruction its message carried (None: the plain prompt)."""


def steering_sources(prompts: Sequence[str], objectives: Sequence[Objective], samples: int,
                     steered: bool = True) -> list[tuple[str, str | None]]:
    """(prompt, objective whose instruction is appended or None) for ``samples`` answers per prompt, cycling
    through the plain prompt and each objective's instruction."""
    cycle = [None] + ([o.name for o in objectives if o.name in INSTRUCTIONS] if steered else [])
    return [(prompt, cycle[j % len(cycle)]) for prompt in prompts for j in range(samples)]


def steered_messages(prompts: Sequence[str], objectives: Sequence[Objective], samples: int,
                     steered: bool = True) -> list[str]:
    """The user messages of :func:`steering_sources`."""
    return [message_of(prompt, name) for prompt, name in steering_sources(prompts, objectives, samples, steered)]


def message_of(prompt: str, objective: str | None) -> str:
    """``prompt`` with ``objective``'s instruction appended (None: the plain prompt)."""
    return f"{prompt}\n\n{steering_text(Preference.parse({objective: 1.0}))}" if objective else prompt


def sample_answers(model: str | None, prompts: Sequence[str], objectives: Sequence[Objective], sampling: Sampling, *,
                   device: str = "auto", dtype: str = "auto", progress: bool = True) -> tuple[list[Any], int]:
    """``sampling.samples`` answers per prompt as ScoredResponse records of the plain prompt (unscored, ``meta``
    naming the instruction each was steered by), and the number of tokens generated."""
    from ...data import ScoredResponse
    from ...generation import GenerationConfig, generate
    from ...models import load_model

    base, tokenizer = load_model(model, dtype=dtype, device=device)
    sources = steering_sources(prompts, objectives, sampling.samples, sampling.steered)
    config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, min_new_tokens=1,
                              temperature=sampling.temperature, seed=sampling.seed, batch_size=GENERATION_BATCH,
                              progress=progress)
    responses = generate(base, tokenizer, [message_of(prompt, name) for prompt, name in sources], config)
    records = [ScoredResponse(prompt=prompt, response=r.text, meta={STEERED_BY: name})
               for (prompt, name), r in zip(sources, responses)]
    return records, sum(len(r.token_ids) for r in responses)


def write_samples(run: RunDirectory, records: Sequence[Any]) -> None:
    from ...data import write_jsonl

    write_jsonl(run.path / SAMPLES_FILE, records)


def read_samples(run: RunDirectory) -> list[Any]:
    from ...data import ScoredResponse, read_jsonl

    return read_jsonl(run.path / SAMPLES_FILE, ScoredResponse)


def reuse_samples(run: RunDirectory, source_dir: str | Path) -> tuple[list[Any], dict[str, Any]]:
    """The base-model samples of the run at ``source_dir`` (its ``samples`` stage finished, same base model), and
    that stage's compute, which counts as this run's."""
    source = RunDirectory.open(source_dir)
    stage = source.manifest.get("stages", {}).get(SAMPLES_STAGE)
    if stage is None or not (source.path / SAMPLES_FILE).is_file():
        raise ConfigError(f"samples_from {str(source_dir)!r} has no finished base-model samples; give a soups or mod "
                          "run fitted with trainer=dpo")
    base, theirs = run.fingerprint.get("base_model"), source.fingerprint.get("base_model")
    if base != theirs:
        raise ConfigError(f"samples_from {str(source_dir)!r} sampled {theirs!r}, this run uses {base!r}; "
                          "reuse samples of the same base model")
    compute = {key: stage.get(key, 0) for key in ("generated_tokens", "wall_time_s")}
    return read_samples(source), {**compute, "copied_from": str(source_dir)}
