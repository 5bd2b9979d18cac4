"""RiC's stages (METHODS.md "RiC"), each ``stage(run, objectives, config) -> record`` with its compute.

1. :func:`prepare`: every offline response (both sides of preference pairs, scored responses, base-model
   answers to prompt-only data, or another run's base-model samples) scored with every objective;
   ``data/offline.jsonl`` keeps raw scores and normalized rewards; the target range is the span of those rewards.
2. :func:`train_offline`: LoRA SFT, loss on response tokens, each prompt carrying its response's own rewards.
3. :func:`train_online`: per iteration, targets on the frontier -> generate (T=0.7, top-p 0.9, EOS banned first)
   -> relabel with the rewards obtained -> drop degenerate samples -> MORS on the new samples and on the original
   data (capped) -> SFT at the online learning rate (constant) on kept original + all online data so far.

Prompt-only data (the default: the shipped train prompts) is answered ``samples_per_prompt`` times per prompt,
steered by each objective's instruction in turn (``common.base_samples``), which widens the range of rewards the
model learns to condition on; the dataset keeps the plain prompt. Training resumes from a stage folder's newest
checkpoint, and finished online iterations are kept (``manifest["online_iterations"]``), so an interrupted fit
goes on where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import DataError, ModelLoadError
from ...core.rundir import COMPUTE_KEYS, RunDirectory
from ...core.runtime import autocast_precision
from ...data import (DEFAULT_PROMPT_SET, PreferencePair, PromptRecord, SafetyPair, ScoredResponse, load_mixture,
                     read_jsonl, write_jsonl)
from ...generation import GenerationConfig
from ...models import load_adapter, load_model
from ...objectives import score_all
from ...objectives.base import Objective
from ...training import SFTConfig, SFTTrainer, TrainResult
from ...training.base import CHECKPOINTS, FINAL_MODEL
from ..common.base_samples import GENERATION_BATCH, Sampling, reuse_samples, sample_answers
from .conditioning import Conditioning
from .policy import RiCPolicy
from .recipe import RiCConfig
from .targets import fitted_range, is_degenerate, mors_mask, sample_frontier_targets

OFFLINE = "offline"
OFFLINE_DATA = "data/offline.jsonl"
REWARDS = "rewards"
ORIGIN = "origin"
ONLINE = "online_iterations"
"""Manifest key: one record per online iteration, finished ones carrying their ``adapter``."""


# ---------------------------------------------------------------- 1. prepare


def prepare(run: RunDirectory, objectives: Sequence[Objective], config: RiCConfig) -> dict[str, Any]:
    """Score the offline responses with every objective and fit the target range (their span)."""
    started = time.perf_counter()
    pairs, drawn = offline_responses(run, objectives, config)
    data = scored_records(objectives, pairs, OFFLINE)
    write_jsonl(run.path / OFFLINE_DATA, data)
    span = fitted_range(rewards_of(data, [o.name for o in objectives]))
    run.manifest["target_range"] = {name: list(bounds) for name, bounds in span.items()}
    run.add_artifact("offline_data", OFFLINE_DATA, records=len(data))
    wall = round(time.perf_counter() - started + drawn.pop("wall_time_s", 0), 3)
    return {"responses": len(data), **drawn, "trained_tokens": 0, "wall_time_s": wall}


def offline_responses(run: RunDirectory, objectives: Sequence[Objective],
                      config: RiCConfig) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The (prompt, response) pairs RiC learns from and what drawing them cost: another run's base-model samples
    (``samples_from``), else the dataset's responses plus base-model answers to its prompts."""
    if config.samples_from:
        records, cost = reuse_samples(run, config.samples_from)
        return [(record.prompt, record.response) for record in records], cost
    dataset = config.dataset or [DEFAULT_PROMPT_SET]
    records = load_mixture(dataset, seed=config.seed)
    pairs = [pair for record in records for pair in responses_of(record)]
    prompts = [record.prompt for record in records if isinstance(record, PromptRecord)]
    prompts = prompts[: config.max_prompts] if config.max_prompts else prompts
    generated = 0
    if prompts:
        sampling = Sampling(samples=config.samples_per_prompt, max_new_tokens=config.max_new_tokens,
                            temperature=config.temperature, seed=config.seed)
        sampled, generated = sample_answers(config.model, prompts, objectives, sampling, device=config.device,
                                            dtype=config.dtype, progress=config.progress)
        pairs += [(record.prompt, record.response) for record in sampled]
    if not pairs:
        raise DataError(f"the RiC data {dataset} holds no responses or prompts; give "
                        "preference pairs, scored responses or prompts")
    return pairs, {"sampled_prompts": len(prompts), "generated_tokens": generated}


def responses_of(record: Any) -> list[tuple[str, str]]:
    """(prompt, response) pairs a record contributes: both sides of a pair, or its one response."""
    if isinstance(record, PreferencePair):
        return [(record.prompt, record.chosen), (record.prompt, record.rejected)]
    if isinstance(record, SafetyPair):
        return [(record.prompt, record.response_0), (record.prompt, record.response_1)]
    if isinstance(record, ScoredResponse):
        return [(record.prompt, record.response)]
    return []


def scored_records(objectives: Sequence[Objective], pairs: Sequence[tuple[str, str]],
                   origin: str) -> list[ScoredResponse]:
    """Every (prompt, response) with its raw ``scores`` and normalized ``meta["rewards"]`` (what RiC conditions on)."""
    prompts, texts = [p for p, _ in pairs], [r for _, r in pairs]
    raw = score_all(objectives, prompts, texts)
    rewards = {o.name: o.normalize(raw[o.name]) for o in objectives}
    return [
        ScoredResponse(prompt=prompt, response=text, scores={name: float(raw[name][i]) for name in raw},
                       meta={REWARDS: {name: float(rewards[name][i]) for name in rewards}, ORIGIN: origin})
        for i, (prompt, text) in enumerate(pairs)
    ]


def rewards_of(records: Sequence[ScoredResponse], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.array([record.meta[REWARDS][name] for record in records]) for name in names}


# ---------------------------------------------------------------- 2. offline SFT


def train_offline(run: RunDirectory, objectives: Sequence[Objective], config: RiCConfig) -> dict[str, Any]:
    """LoRA SFT on the offline data, each prompt carrying its response's own rewards."""
    data = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    result = train_sft(run, OFFLINE, data, objectives, config, steps=config.steps, lr=config.lr, scheduler="cosine")
    run.add_artifact("adapter", f"{OFFLINE}/{FINAL_MODEL}", stage=OFFLINE)
    return {"examples": len(data), "steps": result.steps, **result.compute}


def train_sft(run: RunDirectory, stage: str, data: Sequence[ScoredResponse], objectives: Sequence[Objective],
              config: RiCConfig, *, steps: int, lr: float, scheduler: str, model: Any = None,
              tokenizer: Any = None) -> TrainResult:
    """Reward-conditioned SFT into ``run/stage`` (``model``: an adapted model to train further, None: a fresh LoRA
    on the base); resumes from the stage's newest checkpoint when an interrupted fit left one."""
    output_dir = run.path / stage
    resume = any((output_dir / CHECKPOINTS).glob("checkpoint-*"))
    sft = SFTConfig(
        model=config.model, output_dir=str(output_dir), lora_r=config.lora_r, lora_alpha=config.lora_alpha, lr=lr,
        scheduler=scheduler, warmup_steps=0 if scheduler == "constant" else min(10, steps // 10), max_steps=steps,
        batch_size=config.batch_size, group_by_length=True, max_length=config.max_length, save_every=config.save_every,
        seed=config.seed, dtype=config.dtype, device=config.device, progress=config.progress, resume=resume,
        overwrite=not resume,
        mixed_precision=autocast_precision(config.device, config.mixed_precision),
    )
    transform = conditioned_prompt_transform(config.conditioning, [o.name for o in objectives])
    return SFTTrainer(sft, data, model=model, tokenizer=tokenizer, prompt_transform=transform).train()


def conditioned_prompt_transform(conditioning: Conditioning, names: Sequence[str]):
    """``prompt_transform`` for SFTTrainer: the record's prompt carrying the record's own rewards."""

    def transform(record: Mapping[str, Any]) -> str:
        return conditioning.condition(record["prompt"], {name: record[REWARDS][name] for name in names})

    return transform


# ---------------------------------------------------------------- 3. online iterations


def train_online(run: RunDirectory, objectives: Sequence[Objective], config: RiCConfig) -> dict[str, Any]:
    """``config.online_iterations`` iterations of sample -> relabel -> filter -> SFT; finished ones are kept, an
    interrupted one reuses its samples and its training checkpoint."""
    iterations = run.manifest.setdefault(ONLINE, [])
    for iteration in range(1, config.online_iterations + 1):
        if iteration <= len(iterations) and "adapter" in iterations[iteration - 1]:
            continue
        model, tokenizer = adapted_model(run, config.model, config.device, config.dtype, trainable=True)
        if iteration > len(iterations):
            policy = RiCPolicy(model, tokenizer, target_range(run), mapping=config.mapping,
                               conditioning=config.conditioning)
            iterations.append(sample_online(run, iteration, policy, objectives, config))
            run.save_manifest()
        data, original_kept = online_training_data(run, iteration, objectives, config)
        stage = f"online-{iteration}"
        result = train_sft(run, stage, data, objectives, config, steps=config.online_steps, lr=config.online_lr,
                           scheduler="constant", model=model, tokenizer=tokenizer)
        entry = iterations[iteration - 1]
        entry.update(original_kept=original_kept, examples=len(data), steps=result.steps,
                     trained_tokens=result.trained_tokens, adapter=f"{stage}/{FINAL_MODEL}",
                     wall_time_s=round(entry["wall_time_s"] + result.wall_time_s, 3))
        run.add_artifact("adapter", entry["adapter"], stage=stage)
    return {key: round(sum(entry.get(key, 0) for entry in iterations), 3) for key in COMPUTE_KEYS}


def online_sampling(config: RiCConfig, iteration: int) -> GenerationConfig:
    """The original's online sampling: T=0.7, top-p 0.9, EOS banned as the first token (by default)."""
    return GenerationConfig(max_new_tokens=config.max_new_tokens, min_new_tokens=1,
                            temperature=config.online_temperature, top_p=config.online_top_p,
                            seed=config.seed + 1000 * iteration, batch_size=GENERATION_BATCH, progress=config.progress)


def sample_online(run: RunDirectory, iteration: int, policy: RiCPolicy, objectives: Sequence[Objective],
                  config: RiCConfig) -> dict[str, Any]:
    """Generate at frontier targets, relabel with the rewards obtained, keep the non-degenerate MORS survivors."""
    started = time.perf_counter()
    rng = np.random.default_rng([config.seed, iteration])
    prompts = sorted({record.prompt for record in read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)})
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=config.online_samples)]
    targets = sample_frontier_targets(policy.target_range, config.online_samples, rng)
    sampling = online_sampling(config, iteration)
    responses = policy.generate_for_targets(chosen, targets, sampling)
    pairs = [(prompt, r.text) for prompt, r in zip(chosen, responses) if not is_degenerate(r.text)]
    kept = mors_kept(scored_records(objectives, pairs, f"online-{iteration}"), objectives, config.quantile)
    write_jsonl(online_data_path(run, iteration), kept)
    return {"iteration": iteration, "sampled": len(responses), "degenerate": len(responses) - len(pairs),
            "kept": len(kept), "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                            "min_new_tokens": sampling.min_new_tokens},
            "generated_tokens": sum(len(r.token_ids) for r in responses), "trained_tokens": 0,
            "wall_time_s": round(time.perf_counter() - started, 3)}


def online_training_data(run: RunDirectory, iteration: int, objectives: Sequence[Objective],
                         config: RiCConfig) -> tuple[list[ScoredResponse], int]:
    """The original data filtered as the samples are (degenerate, MORS) and capped at ``original_cap`` (a random
    subset), plus every online iteration's kept samples up to ``iteration``; and how many originals were kept."""
    original = [r for r in read_jsonl(run.path / OFFLINE_DATA, ScoredResponse) if not is_degenerate(r.response)]
    kept = mors_kept(original, objectives, config.quantile)
    if len(kept) > config.original_cap:
        rng = np.random.default_rng([config.seed, iteration, len(kept)])
        kept = [kept[i] for i in sorted(rng.choice(len(kept), size=config.original_cap, replace=False))]
    online = [row for i in range(1, iteration + 1) for row in read_jsonl(online_data_path(run, i), ScoredResponse)]
    return kept + online, len(kept)


def mors_kept(records: list[ScoredResponse], objectives: Sequence[Objective], quantile: float) -> list[ScoredResponse]:
    if not records:
        return []
    keep = mors_mask(rewards_of(records, [o.name for o in objectives]), quantile)
    return [record for record, k in zip(records, keep) if k]


def online_data_path(run: RunDirectory, iteration: int) -> Path:
    return run.path / "data" / f"online-{iteration}.jsonl"


# ---------------------------------------------------------------- the trained policy


def target_range(run: RunDirectory) -> dict[str, tuple[float, float]]:
    return {name: (low, high) for name, (low, high) in run.manifest["target_range"].items()}


def adapted_model(run: RunDirectory, model: str | None, device: str, dtype: str, trainable: bool = False):
    """The base model with the run's newest adapter (the offline one, or the last online iteration's)."""
    adapter = run.path / run.manifest["artifacts"]["adapter"]["path"]
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"the RiC adapter {str(adapter)!r} is missing; fit the run again with --overwrite")
    base, tokenizer = load_model(model, device=device, dtype=dtype)
    return load_adapter(base, adapter, trainable=trainable), tokenizer


def policy_of(run: RunDirectory, config: RiCConfig, device: str = "auto", dtype: str = "auto") -> RiCPolicy:
    """The run's policy: the base model with its newest adapter, steered through the run's target range."""
    model, tokenizer = adapted_model(run, config.model, device, dtype)
    return RiCPolicy(model.eval(), tokenizer, target_range(run), mapping=config.mapping,
                     conditioning=config.conditioning)
