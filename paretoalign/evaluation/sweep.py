"""The Pareto sweep: run a steerable policy at every preference of a weight grid and measure each point.

Per point (METHODS.md, Evaluation): mean and standard error of every objective's normalized reward,
the mean raw score, KL to the reference, mean length in words and tokens, tokens generated, wall time
of generation, and for each constraint the mean raw cost and the share of responses satisfying it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.errors import ConfigError
from ..core.preference import Constraint, Preference
from ..generation import kl_to_reference
from ..generation.policy import (GENERATED_TOKENS, KL_SELECTION, REFERENCE_LOGPROBS, GenerationConfig, Response,
                                 SteerablePolicy, sample_passes)
from ..objectives import count_words
from ..objectives.base import Objective
from ..objectives.normalization import prompt_texts
from .results import MethodResult, PointResult

SAMPLES_KEPT_PER_POINT = 3


def _check_sweep(
    policy: SteerablePolicy,
    objectives: Sequence[Objective],
    prompts: Sequence[str],
    grid: Sequence[Preference],
    samples_per_prompt: int,
    constraints: Sequence[Constraint],
) -> list[str]:
    """Validate the sweep's inputs; return the grid's objectives (the axes of the front)."""
    if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt <= 0:
        raise ConfigError(f"samples_per_prompt must be a positive integer, got {samples_per_prompt!r}")
    if not prompts:
        raise ConfigError("no prompts to evaluate on; give a non-empty prompt set or file")
    if not grid:
        raise ConfigError("the weight grid is empty; build one with weight_grid(objectives)")
    axes = grid[0].objectives
    for preference in grid:
        if sorted(preference.objectives) != sorted(axes):
            raise ConfigError(f"grid point {preference} names other objectives than {', '.join(axes)}")
    scored = [objective.name for objective in objectives]
    needed = list(axes) + [c.objective for c in constraints]
    missing = [name for name in dict.fromkeys(needed) if name not in scored]
    if missing:
        raise ConfigError(f"no scorer given for {', '.join(missing)}; add it to the objectives to evaluate")
    if policy.objectives is not None:
        unsteerable = [name for name in axes if name not in policy.objectives]
        if unsteerable:
            raise ConfigError(
                f"policy {policy.name!r} cannot be steered on {', '.join(unsteerable)}; it knows "
                f"{', '.join(policy.objectives) or 'no objectives'}: choose a grid on those"
            )
    unfitted = [objective.name for objective in objectives if objective.stats is None]
    if unfitted:
        raise ConfigError(
            f"objective(s) {', '.join(unfitted)} have no normalization statistics; fit them first with "
            "fit_reference_normalization(...) or load them from a run manifest"
        )
    return list(axes)


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def _constraint_summary(constraints: Sequence[Constraint], raw: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Mean raw cost and share of responses satisfying each constraint (thresholds are on raw scores)."""
    summary = {}
    for constraint in constraints:
        costs = raw[constraint.objective]
        satisfied = np.array([constraint.satisfied(float(cost)) for cost in costs])
        summary[str(constraint)] = {
            "objective": constraint.objective,
            "op": constraint.op,
            "threshold": constraint.threshold,
            "mean_cost": float(costs.mean()),
            "satisfied_share": float(satisfied.mean()),
        }
    return summary


def _sequence_kl(responses: list[Response], prompts: list[str], reference: tuple[Any, Any], config: GenerationConfig) -> np.ndarray:
    """Per-response KL to π_ref on the plain prompts, plus any divergence the policy's selection adds. Responses
    sampled from π_ref itself carry its log-probabilities, so they need no teacher-forced pass."""
    if all(REFERENCE_LOGPROBS in r.meta for r in responses):
        kl = np.array([sum(r.logprobs) - sum(r.meta[REFERENCE_LOGPROBS]) for r in responses], dtype=np.float64)
    else:
        ref_model, ref_tokenizer = reference
        kl = np.asarray(
            kl_to_reference(responses, ref_model, ref_tokenizer, prompts, system_prompt=config.system_prompt),
            dtype=np.float64,
        )
    selection = np.array([float(r.meta.get(KL_SELECTION, 0.0)) for r in responses])
    return kl + selection


def _measure_point(
    preference: Preference,
    responses: list[Response],
    prompts: list[str],
    seconds: float,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
    kl: np.ndarray,
    kept: int,
) -> PointResult:
    """Score one point's responses (``prompts`` repeated once per sample); keep sample 0 of the first ``kept`` prompts."""
    texts = [response.text for response in responses]
    raw = {o.name: np.asarray(o.score(prompts, texts), dtype=np.float64) for o in objectives}
    normalized = {o.name: o.normalize(raw[o.name]) for o in objectives}
    token_counts = np.array([len(r.token_ids) for r in responses], dtype=np.float64)
    generated = sum(int(r.meta.get(GENERATED_TOKENS, len(r.token_ids))) for r in responses)
    return PointResult(
        weights=preference.as_dict(),
        rewards={name: float(values.mean()) for name, values in normalized.items()},
        stderr={name: _stderr(values) for name, values in normalized.items()},
        raw={name: float(values.mean()) for name, values in raw.items()},
        kl=float(kl.mean()),
        kl_stderr=_stderr(kl),
        length=float(np.mean([count_words(text) for text in texts])),
        length_tokens=float(token_counts.mean()),
        tokens=generated,
        seconds=seconds,
        responses=len(responses),
        cut_off=float(np.mean([r.finish_reason == "length" for r in responses])),
        constraints=_constraint_summary(constraints, raw),
        samples=[{"prompt": p, "response": t} for p, t in zip(prompts[:kept], texts)],
    )


def _same_answers(first: PointResult, preference: Preference) -> PointResult:
    """A policy that ignores the preference answers every point alike: reuse the first point's
    measurements instead of generating again (no new tokens, no time)."""
    return replace(first, weights=preference.as_dict(), tokens=0, seconds=0.0)


def batches_grid(policy: SteerablePolicy) -> bool:
    """True when one ``generate`` call can serve every grid point (the policy mixes preferences in a batch)."""
    return bool(getattr(policy, "mixes_preferences", False)) and not getattr(policy, "ignores_preference", False)


def _generate_grid(
    policy: SteerablePolicy,
    prompts: list[str],
    grid: Sequence[Preference],
    config: GenerationConfig,
    samples_per_prompt: int,
    progress: bool,
) -> list[tuple[list[Response], float]]:
    """Every point's responses (as ``sample_passes`` gives them) from one call per sample pass over all points'
    rows (a progress bar over its batches); each point is charged the time in proportion to its tokens."""
    rows = [preference for preference in grid for _ in prompts]
    passes = []
    start = time.perf_counter()
    for sample in range(samples_per_prompt):
        seed = None if config.seed is None else config.seed + sample
        passes.append(policy.generate(prompts * len(grid), rows, replace(config, seed=seed,
                                                                         progress=config.progress or progress)))
    seconds = time.perf_counter() - start
    size = len(prompts)
    points = [[r for answers in passes for r in answers[i * size : (i + 1) * size]] for i in range(len(grid))]
    tokens = [sum(int(r.meta.get(GENERATED_TOKENS, len(r.token_ids))) for r in point) for point in points]
    total = sum(tokens)
    return [(point, seconds * (count / total if total else 1 / len(grid))) for point, count in zip(points, tokens)]


def evaluate(
    policy: SteerablePolicy,
    objectives: Sequence[Objective],
    prompts: Sequence[Any],
    grid: Sequence[Preference],
    samples_per_prompt: int = 1,
    config: GenerationConfig | None = None,
    constraints: Sequence[Constraint] = (),
    progress: bool = True,
) -> MethodResult:
    """Sweep ``policy`` over ``grid`` on ``prompts`` and measure every point with every objective.

    Objectives must already carry normalization statistics (see ``objectives.fit_reference_normalization``)
    so that every method is measured on the same scale. Sample s of each prompt uses seed
    ``config.seed + s`` at every point; ``seconds`` is the wall time of generation alone. A policy that
    mixes preferences in a batch answers all points' rows of a sample pass in one call (:func:`batches_grid`;
    the same answers as point by point, seeds being per preference), its time shared out by tokens. A trained
    policy's ``training_cost`` (``generated_tokens``, ``trained_tokens``, ``wall_time_s``) is carried over.
    """
    config = config or GenerationConfig()
    prompt_list = prompt_texts(prompts)
    axes = _check_sweep(policy, objectives, prompt_list, grid, samples_per_prompt, constraints)
    reference = policy.reference()
    repeated = prompt_list * samples_per_prompt
    batched = (_generate_grid(policy, prompt_list, grid, config, samples_per_prompt, progress)
               if batches_grid(policy) else None)
    grid_kl = None if batched is None else _sequence_kl(  # one pass over every row: batches of similar lengths
        [response for responses, _ in batched for response in responses], repeated * len(grid), reference, config)
    points: list[PointResult] = []
    for index, preference in enumerate(tqdm(grid, desc=f"evaluating {policy.name}", unit="point",
                                            disable=not progress)):
        if points and getattr(policy, "ignores_preference", False):
            points.append(_same_answers(points[0], preference))
            continue
        if batched is None:
            start = time.perf_counter()
            responses = sample_passes(policy, prompt_list, preference, config, samples_per_prompt)
            seconds = time.perf_counter() - start
        else:
            responses, seconds = batched[index]
        kl = (_sequence_kl(responses, repeated, reference, config) if grid_kl is None
              else grid_kl[index * len(repeated) : (index + 1) * len(repeated)])
        kept = min(SAMPLES_KEPT_PER_POINT, len(prompt_list))
        points.append(_measure_point(preference, responses, repeated, seconds, objectives, constraints, kl, kept))
    training = getattr(policy, "training_cost", None) or {}
    return MethodResult(
        name=policy.name,
        objectives=axes,
        points=points,
        normalization={o.name: o.stats.to_dict() for o in objectives},
        uses_scorers_at_decode=bool(getattr(policy, "uses_scorers_at_decode", False)),
        trained_tokens=int(training.get("trained_tokens", 0)),
        training_seconds=float(training.get("wall_time_s", 0.0)),
        training_generated_tokens=int(training.get("generated_tokens", 0)),
    )
