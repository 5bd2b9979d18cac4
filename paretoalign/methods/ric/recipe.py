"""The RiC recipe (METHODS.md "RiC"), stage by stage, in one run directory.

1. ``prepare``: responses (both sides of preference pairs, scored responses, or samples of the base model
   for prompt-only data) scored with every objective, z-normalized, written to ``data/offline.jsonl``
   with their rewards; the target range is the span of those rewards.
2. ``train_offline``: LoRA SFT, loss on response tokens, each prompt carrying its response's own rewards.
3. ``train_online``: per iteration, targets on the frontier -> generate -> relabel with the obtained
   rewards -> MORS on the new samples and on the original data -> SFT on kept original + all online data.

With no dataset, ``prepare`` samples the base model on the shipped train prompts (``instructions``): each
prompt is answered ``samples_per_prompt`` times, cycling through the plain prompt and the prompt with one
objective's preference instruction from ``methods/prompting.py`` appended (the user turn is where the default
model listens), which widens the range of rewards the model learns to condition on. The dataset keeps the
plain prompt. ``manifest.json`` records the normalization, the target range, every stage and the compute
spent (generated tokens, trained tokens, wall time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.errors import ConfigError
from ...core.preference import Preference
from ...core.rundir import RunDirectory, is_run_dir
from ...core.runtime import choose_device, choose_dtype
from ...data import PreferencePair, PromptRecord, SafetyPair, ScoredResponse, load_mixture, read_jsonl, write_jsonl
from ...generation import GenerationConfig, generate
from ...models import load_adapter, load_model
from ...objectives import apply_stats, load_objectives, score_all, stats_to_dict
from ...objectives.base import NormStats, Objective
from ...training import SFTConfig, SFTTrainer
from ...training.base import TRAINER_STATE, make_trainable
from ..prompting import INSTRUCTIONS, steering_text
from .conditioning import Conditioning
from .policy import RiCPolicy
from .targets import DEFAULT_QUANTILE, check_mapping, fitted_range, mors_mask, sample_frontier_targets

METHOD = "ric"
OFFLINE = "offline"
OFFLINE_DATA = "data/offline.jsonl"
REWARDS = "rewards"
ORIGIN = "origin"
GENERATION_BATCH = 16
COMPUTE_KEYS = ("generated_tokens", "trained_tokens", "wall_time_s")
PRECISIONS = ("auto", "bf16", "fp16", "no")


def setting(default: Any, stage: str, text: str) -> Any:
    """A RiCConfig field: its default, the stage (sub-command) that reads it, and its ``--help`` text."""
    metadata = {"stage": stage, "help": text}
    if isinstance(default, list):
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RiCConfig:
    """Every setting of the recipe; ``stage`` in a field's metadata says which sub-command reads it."""

    model: str | None = setting(None, "prepare", "base model: hub id, folder or .gguf (default: the embedded model)")
    dataset: list[str] = setting([], "prepare", "data: name[:proportion[:path]] or a file of pairs, responses or "
                                 "prompts (default: the shipped instructions, train split)")
    max_prompts: int = setting(0, "prepare", "prompts of prompt-only data to sample (0 = all)")
    samples_per_prompt: int = setting(3, "prepare", "base-model samples per prompt-only record")
    max_new_tokens: int = setting(64, "prepare", "tokens per sampled response (prepare and online)")
    temperature: float = setting(1.0, "prepare", "sampling temperature (prepare and online)")
    encoding: str = setting("numeric", "prepare", "how targets are written: numeric")
    position: str = setting("suffix", "prepare", "where targets go in the user turn: suffix or prefix")
    mapping: str = setting("ric", "prepare", "preference -> targets rule: ric, l2 or linear")
    seed: int = setting(0, "prepare", "random seed")
    dtype: str = setting("float32", "prepare", "weight dtype of the model")
    lora_r: int = setting(64, "train", "LoRA rank")
    lora_alpha: int = setting(128, "train", "LoRA alpha")
    lr: float = setting(1.4e-4, "train", "peak learning rate")
    steps: int = setting(1000, "train", "offline SFT optimizer steps")
    batch_size: int = setting(8, "train", "examples per optimizer step")
    max_length: int = setting(320, "train", "tokens per prompt + response")
    save_every: int = setting(50, "train", "steps between checkpoints (for --resume)")
    mixed_precision: str = setting("auto", "train", "training autocast: auto (bf16 where the hardware has it), "
                                   "bf16, fp16 or no")
    online_samples: int = setting(256, "online", "responses generated per online iteration")
    online_steps: int = setting(200, "online", "SFT steps per online iteration")
    quantile: float = setting(DEFAULT_QUANTILE, "online", "MORS keeps samples with a reward at or above this quantile")
    device: str = setting("auto", "all", "cpu, cuda or auto")
    progress: bool = setting(True, "all", "show progress bars")

    def __post_init__(self) -> None:
        check_mapping(self.mapping)
        Conditioning(self.encoding, self.position)
        for name in ("samples_per_prompt", "max_new_tokens", "steps", "batch_size", "online_samples", "online_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_prompts < 0:
            raise ConfigError(f"max_prompts must be >= 0 (0 = all), got {self.max_prompts}")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.quantile <= 1.0:
            raise ConfigError(f"quantile must be in [0, 1], got {self.quantile}")

    @property
    def conditioning(self) -> Conditioning:
        return Conditioning(self.encoding, self.position)

    @classmethod
    def for_budget(cls, budget: str, **overrides: Any) -> "RiCConfig":
        """The preset ``budget`` (see ``BUDGETS``) with ``overrides`` on top."""
        if budget not in BUDGETS:
            raise ConfigError(f"budget {budget!r} is unknown; use one of {', '.join(BUDGETS)}")
        return cls(**{**BUDGETS[budget]["config"], **overrides})


BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {
        "config": dict(max_prompts=48, samples_per_prompt=3, max_new_tokens=40, temperature=0.7, lora_r=16,
                       lora_alpha=32, lr=1e-3, steps=64, batch_size=8, max_length=160, save_every=32),
        "online_iterations": 0,
    },
    "full": {
        "config": dict(max_prompts=0, samples_per_prompt=3, max_new_tokens=96, lora_r=32, lora_alpha=64, lr=5e-4,
                       steps=300, batch_size=8, max_length=256, save_every=50, online_samples=192, online_steps=100),
        "online_iterations": 1,
    },
}
"""CPU-sized presets (the METHODS.md defaults r=64, α=128, lr=1.4e-4 are ``RiCConfig``'s own, for GPUs):
``quick`` is 48 prompts x 3 samples of 40 tokens (T=0.7, the evaluation's length and temperature) and 64 LoRA
steps of 8 under bf16 autocast; ``full`` uses every train prompt, 96 tokens, 300 steps and one online iteration.
Measured with ``examples/ric_quick.py`` on the shared 2-core CPU while other jobs kept it busy (load 5-8): quick
took 573 s (sampling 137 s, SFT 436 s at ~7 s/step); 40 steps in float32 took 1077 s under heavier load."""


def config_from_manifest(run: RunDirectory, **overrides: Any) -> RiCConfig:
    """The run's config with ``overrides`` on top (and saved back, so later stages see them)."""
    known = {f.name for f in fields(RiCConfig)}
    config = RiCConfig(**{**{k: v for k, v in run.manifest["config"].items() if k in known}, **overrides})
    run.manifest["config"] = asdict(config)
    return config


def run_objectives(run: RunDirectory) -> list[Objective]:
    """The run's objectives, rebuilt from their specs, with the run's normalization statistics."""
    objectives = load_objectives(run.manifest["objective_specs"])
    apply_stats(objectives, run.manifest["normalization"])
    return objectives


def target_range(run: RunDirectory) -> dict[str, tuple[float, float]]:
    return {name: (low, high) for name, (low, high) in run.manifest["target_range"].items()}


# ---------------------------------------------------------------- compute accounting


def record_stage(run: RunDirectory, name: str, entry: Mapping[str, Any]) -> None:
    """Store a stage's record and the run's compute totals (sums over every stage), then save the manifest."""
    stages = run.manifest.setdefault("stages", {})
    if name.startswith("online-"):
        online = [item for item in stages.get("online", []) if item["stage"] != name]
        stages["online"] = sorted([*online, {"stage": name, **entry}], key=lambda item: int(item["stage"][7:]))
    else:
        stages[name] = dict(entry)
    every = [stages[key] for key in stages if key != "online"] + stages.get("online", [])
    run.manifest["compute"] = {
        key: sum(stage.get(key, 0) for stage in every) for key in COMPUTE_KEYS
    }
    run.save_manifest()


# ---------------------------------------------------------------- prepare


def responses_of(record: Any) -> list[tuple[str, str]]:
    """(prompt, response) pairs a record contributes: both sides of a pair, or its one response."""
    if isinstance(record, PreferencePair):
        return [(record.prompt, record.chosen), (record.prompt, record.rejected)]
    if isinstance(record, SafetyPair):
        return [(record.prompt, record.response_0), (record.prompt, record.response_1)]
    if isinstance(record, ScoredResponse):
        return [(record.prompt, record.response)]
    return []


def steered_messages(prompts: Sequence[str], objectives: Sequence[Objective], samples: int) -> list[str]:
    """``samples`` user messages per prompt, cycling through the plain prompt and one objective's instruction."""
    texts = [""] + [steering_text(Preference.parse({o.name: 1.0})) for o in objectives if o.name in INSTRUCTIONS]
    chosen = [(prompt, texts[j % len(texts)]) for prompt in prompts for j in range(samples)]
    return [f"{prompt}\n\n{text}" if text else prompt for prompt, text in chosen]


def sample_base_responses(
    model, tokenizer, prompts: Sequence[str], objectives: Sequence[Objective], config: RiCConfig
) -> tuple[list[tuple[str, str]], int]:
    """Base-model answers to ``prompts`` (see the module notes) and the number of tokens generated."""
    messages = steered_messages(prompts, objectives, config.samples_per_prompt)
    responses = generate(model, tokenizer, messages, generation_config(config, config.seed))
    plain = [prompt for prompt in prompts for _ in range(config.samples_per_prompt)]
    return [(p, r.text) for p, r in zip(plain, responses)], sum(len(r.token_ids) for r in responses)


def generation_config(config: RiCConfig, seed: int) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=seed,
                            batch_size=GENERATION_BATCH, progress=config.progress)


def scored_records(
    objectives: Sequence[Objective], pairs: Sequence[tuple[str, str]], origin: str, source: str = ""
) -> list[ScoredResponse]:
    """Score every (prompt, response) with every objective; objectives without statistics are fitted here first.

    ``scores`` are raw, ``meta["rewards"]`` normalized (what RiC conditions on).
    """
    prompts, texts = [p for p, _ in pairs], [r for _, r in pairs]
    raw = score_all(objectives, prompts, texts)
    for objective in objectives:
        if objective.stats is None:
            objective.stats = NormStats.fit(raw[objective.name], source)
    rewards = {o.name: o.normalize(raw[o.name]) for o in objectives}
    return [
        ScoredResponse(prompt=prompt, response=text, scores={name: float(raw[name][i]) for name in raw},
                       meta={REWARDS: {name: float(rewards[name][i]) for name in rewards}, ORIGIN: origin})
        for i, (prompt, text) in enumerate(pairs)
    ]


def rewards_of(records: Sequence[ScoredResponse], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.array([record.meta[REWARDS][name] for record in records]) for name in names}


def prepare(
    objectives: Sequence[Objective],
    out: str | Path,
    config: RiCConfig,
    *,
    objective_specs: Sequence[str] | None = None,
    model=None,
    tokenizer=None,
    overwrite: bool = False,
) -> RunDirectory:
    """Stage 1: build and score the offline data, fit normalization (unless the objectives carry it) and the
    target range, and start the run directory ``out``. ``objective_specs`` rebuild the objectives in later
    stages (default: their names)."""
    started = time.perf_counter()
    objectives = list(objectives)
    if not objectives:
        raise ConfigError("RiC needs at least one objective; pass --objectives a,b")
    names = [o.name for o in objectives]
    records = load_mixture(config.dataset or ["instructions"], seed=config.seed)
    run = RunDirectory.create(
        out, METHOD, overwrite=overwrite, base_model=config.model or "default", seed=config.seed, objectives=names,
        objective_specs=list(objective_specs or names), config=asdict(config), mapping=config.mapping,
        conditioning={"encoding": config.encoding, "position": config.position},
    )
    pairs = [pair for record in records for pair in responses_of(record)]
    prompts = [record.prompt for record in records if isinstance(record, PromptRecord)]
    prompts = prompts[: config.max_prompts] if config.max_prompts else prompts
    generated = 0
    if prompts:
        if model is None:
            model, tokenizer = load_model(config.model, dtype=config.dtype, device=config.device)
        sampled, generated = sample_base_responses(model, tokenizer, prompts, objectives, config)
        pairs += sampled
    data = scored_records(objectives, pairs, OFFLINE, f"RiC offline data ({len(pairs)} responses)")
    write_jsonl(run.path / OFFLINE_DATA, data)
    span = fitted_range(rewards_of(data, names))
    run.manifest.update(normalization=stats_to_dict(objectives), target_range={k: list(v) for k, v in span.items()})
    run.add_artifact("offline_data", OFFLINE_DATA, records=len(data))
    record_stage(run, "prepare", {"responses": len(data), "sampled_prompts": len(prompts),
                                  "generated_tokens": generated, "trained_tokens": 0,
                                  "wall_time_s": round(time.perf_counter() - started, 3)})
    return run


# ---------------------------------------------------------------- SFT stages


def conditioned_prompt_transform(conditioning: Conditioning, names: Sequence[str]):
    """``prompt_transform`` for SFTTrainer: the record's prompt carrying the record's own rewards."""

    def transform(record: Mapping[str, Any]) -> str:
        return conditioning.condition(record["prompt"], {name: record[REWARDS][name] for name in names})

    return transform


def sft_config(config: RiCConfig, output_dir: Path, steps: int, resume: bool, overwrite: bool) -> SFTConfig:
    return SFTConfig(
        model=config.model, output_dir=str(output_dir), lora_r=config.lora_r, lora_alpha=config.lora_alpha,
        lr=config.lr, max_steps=steps, batch_size=config.batch_size, max_length=config.max_length,
        save_every=config.save_every, seed=config.seed, dtype=config.dtype, device=config.device,
        progress=config.progress, resume=resume, overwrite=overwrite, warmup_steps=min(10, steps // 10),
        mixed_precision=training_precision(config),
    )


def training_precision(config: RiCConfig) -> str:
    """``config.mixed_precision``, with ``auto`` resolved to what the device computes fast (bf16 on CPUs with
    AVX-512 BF16 or AMX: about twice as fast as float32 for a LoRA step of the default model, measured here)."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    dtype = choose_dtype(choose_device(config.device))
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")


def check_offline_start(run: RunDirectory, resume: bool, retrain: bool) -> None:
    """Refuse to silently redo or clobber the offline stage: finished -> --retrain; interrupted -> --resume."""
    if resume or retrain:
        return
    if OFFLINE in run.manifest.get("stages", {}):
        raise ConfigError(f"{run.path} already has a trained offline stage; run 'ric online' next, or pass --retrain")
    if (run.path / OFFLINE).exists():
        raise ConfigError(
            f"{run.path / OFFLINE} holds an interrupted training; pass --resume to continue it or --retrain"
        )


def checkpointed_seconds(trainer: SFTTrainer) -> float:
    """Training time already spent in the checkpoint a resumed trainer continues from."""
    checkpoint = trainer.latest_checkpoint() if trainer.config.resume else None
    if checkpoint is None:
        return 0.0
    return float(json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8")).get("elapsed_s", 0.0))


def run_sft(run: RunDirectory, stage: str, data: Sequence[ScoredResponse], config: RiCConfig, steps: int,
            model, tokenizer, *, resume: bool, extra: Mapping[str, Any] | None = None):
    """Train ``model`` (a PEFT model, or None to load the base and attach LoRA) on ``data``; record the stage."""
    started = time.perf_counter()
    names = run.manifest["objectives"]
    sft = sft_config(config, run.path / stage, steps, resume, overwrite=not resume)
    transform = conditioned_prompt_transform(Conditioning(**run.manifest["conditioning"]), names)
    trainer = SFTTrainer(sft, data, model=model, tokenizer=tokenizer, prompt_transform=transform)
    previous = checkpointed_seconds(trainer)
    result = trainer.train()
    adapter = f"{stage}/model"
    run.add_artifact("adapter", adapter, stage=stage)
    record_stage(run, stage, {**(extra or {}), "examples": len(data), "steps": result.steps,
                              "trained_tokens": result.trained_tokens, "adapter": adapter,
                              "wall_time_s": round(extra_seconds(extra) + previous + time.perf_counter() - started, 3)})
    # accelerate's autocast wrapper stays on the model's forward; drop it so the policy runs like a reloaded one
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()


def extra_seconds(extra: Mapping[str, Any] | None) -> float:
    return float((extra or {}).get("wall_time_s", 0.0))


def train_offline(run: RunDirectory, *, model=None, tokenizer=None, resume: bool = False, retrain: bool = False,
                  **overrides: Any):
    """Stage 2: LoRA SFT on the offline data, each prompt carrying its response's rewards; returns the model.

    ``model``: a loaded base model to adapt in place (None: load it). ``resume`` continues from the last
    checkpoint; ``overrides`` change training settings (saved to the manifest).
    """
    check_offline_start(run, resume, retrain)
    if retrain:
        run.manifest.get("stages", {}).pop("online", None)  # online data came from the replaced model
    config = config_from_manifest(run, **overrides)
    data = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    if model is not None:
        model = make_trainable(model, sft_config(config, run.path / OFFLINE, config.steps, resume, False))
    return run_sft(run, OFFLINE, data, config, config.steps, model, tokenizer, resume=resume)


def load_trained(run: RunDirectory, trainable: bool = False, device: str | None = None):
    """The base model with the run's current adapter, and its tokenizer."""
    adapter = run.manifest.get("artifacts", {}).get("adapter")
    if adapter is None:
        raise ConfigError(f"{run.path} has no trained adapter yet; run 'paretoalign ric train {run.path}' first")
    config = RiCConfig(**run.manifest["config"])
    model, tokenizer = load_model(config.model, dtype=config.dtype, device=device or config.device)
    return load_adapter(model, run.path / adapter["path"], trainable=trainable), tokenizer


def policy_from(run: RunDirectory, model, tokenizer) -> RiCPolicy:
    """The run's policy around an adapted ``model``, with the run's compute as its ``training_cost``."""
    compute = run.manifest.get("compute", {})
    return RiCPolicy(model, tokenizer, target_range(run), mapping=run.manifest["mapping"],
                     conditioning=Conditioning(**run.manifest["conditioning"]), name=METHOD,
                     training_cost={key: compute.get(key, 0) for key in COMPUTE_KEYS})


def load_policy(run_dir: str | Path, device: str | None = None) -> RiCPolicy:
    """The trained RiC policy of a run directory (base model + its newest adapter)."""
    run = RunDirectory.open(run_dir)
    if run.manifest.get("method") != METHOD:
        raise ConfigError(f"{run_dir} is a {run.manifest.get('method')!r} run, not a RiC run")
    model, tokenizer = load_trained(run, device=device)
    return policy_from(run, model, tokenizer)


# ---------------------------------------------------------------- online iterations


def online_dataset_path(run: RunDirectory, iteration: int) -> Path:
    return run.path / "data" / f"online-{iteration}.jsonl"


def online_entry(run: RunDirectory, stage: str) -> dict[str, Any] | None:
    """The manifest record of online stage ``stage`` (without its name), or None."""
    for item in run.manifest.get("stages", {}).get("online", []):
        if item["stage"] == stage:
            return {key: value for key, value in item.items() if key != "stage"}
    return None


def finished_online(run: RunDirectory) -> int:
    """How many online iterations have finished training."""
    return sum(1 for item in run.manifest.get("stages", {}).get("online", []) if "steps" in item)


def sample_online(run: RunDirectory, iteration: int, policy: RiCPolicy, objectives: Sequence[Objective],
                  config: RiCConfig) -> dict[str, Any]:
    """Generate at frontier targets, relabel with the obtained rewards, keep the MORS survivors on disk."""
    started = time.perf_counter()
    rng = np.random.default_rng([config.seed, iteration])
    prompts = sorted({record.prompt for record in read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)})
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=config.online_samples)]
    targets = sample_frontier_targets(policy.target_range, config.online_samples, rng)
    responses = policy.generate_for_targets(chosen, targets, generation_config(config, config.seed + 1000 * iteration))
    records = scored_records(objectives, [(p, r.text) for p, r in zip(chosen, responses)], f"online-{iteration}")
    keep = mors_mask(rewards_of(records, policy.objectives), config.quantile)
    write_jsonl(online_dataset_path(run, iteration), [r for r, k in zip(records, keep) if k])
    return {"iteration": iteration, "sampled": len(records), "kept": int(keep.sum()),
            "generated_tokens": sum(len(r.token_ids) for r in responses),
            "wall_time_s": round(time.perf_counter() - started, 3)}


def online_training_data(run: RunDirectory, iteration: int, quantile: float) -> tuple[list[ScoredResponse], int]:
    """MORS-kept original data + every online iteration's kept data up to ``iteration``; and the original kept."""
    original = read_jsonl(run.path / OFFLINE_DATA, ScoredResponse)
    keep = mors_mask(rewards_of(original, run.manifest["objectives"]), quantile)
    kept = [record for record, k in zip(original, keep) if k]
    online = [row for i in range(1, iteration + 1) for row in read_jsonl(online_dataset_path(run, i), ScoredResponse)]
    return kept + online, len(kept)


def train_online(run: RunDirectory, iterations: int, *, objectives: Sequence[Objective] | None = None, model=None,
                 tokenizer=None, resume: bool = False, **overrides: Any):
    """Stage 3: run online iterations until the run has ``iterations`` of them; returns the model.

    Finished iterations are kept; an interrupted one reuses its sampled data and, with ``resume``, its
    training checkpoint. ``model``: the adapted model to keep training in place (None: load the run's).
    """
    if OFFLINE not in run.manifest.get("stages", {}):
        raise ConfigError(f"{run.path} has no offline stage yet; run 'paretoalign ric train {run.path}' first")
    config = config_from_manifest(run, **overrides)
    objectives = list(objectives) if objectives is not None else run_objectives(run)
    if model is None and finished_online(run) < iterations:
        model, tokenizer = load_trained(run, trainable=True)
    for iteration in range(finished_online(run) + 1, iterations + 1):
        stage = f"online-{iteration}"
        sampling = online_entry(run, stage)
        if sampling is None or not online_dataset_path(run, iteration).exists():
            sampling = sample_online(run, iteration, policy_from(run, model, tokenizer), objectives, config)
            record_stage(run, stage, sampling)
        data, original_kept = online_training_data(run, iteration, config.quantile)
        model = run_sft(run, stage, data, config, config.online_steps, model, tokenizer,
                        resume=resume, extra={**sampling, "original_kept": original_kept})
    return model


# ---------------------------------------------------------------- one shot and the demo


def run_recipe(objectives: Sequence[Objective], out: str | Path, config: RiCConfig, *, online_iterations: int = 0,
               objective_specs: Sequence[str] | None = None, overwrite: bool = False) -> RiCPolicy:
    """prepare -> offline SFT -> ``online_iterations`` online iterations, in one process (one model load)."""
    model, tokenizer = load_model(config.model, dtype=config.dtype, device=config.device)
    run = prepare(objectives, out, config, objective_specs=objective_specs, model=model, tokenizer=tokenizer,
                  overwrite=overwrite)
    model = train_offline(run, model=model, tokenizer=tokenizer)
    if online_iterations:
        model = train_online(run, online_iterations, objectives=objectives, model=model, tokenizer=tokenizer)
    run.manifest["finished"] = True
    run.save_manifest()
    return policy_from(run, model, tokenizer)


def finished_run(workdir: Path, objectives: Sequence[Objective], config: RiCConfig) -> bool:
    """True when ``workdir`` holds a finished RiC run with these objectives, statistics and settings."""
    if not is_run_dir(workdir):
        return False
    manifest = RunDirectory.open(workdir).manifest
    return (manifest.get("method") == METHOD and manifest.get("finished", False)
            and manifest.get("objectives") == [o.name for o in objectives]
            and manifest.get("normalization") == stats_to_dict(objectives)
            and settings(manifest.get("config", {})) == settings(asdict(config)))


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields that change what is trained (not where or how verbosely it runs)."""
    return {key: value for key, value in config.items() if key not in ("device", "progress")}


def train_for_demo(
    objectives: list[Objective],
    workdir: Path,
    *,
    budget: str = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> RiCPolicy:
    """Train RiC for the demo sweep in ``workdir`` (or reload the finished run there) and return its policy.

    The objectives' normalization statistics are used as they are (the same scale as the evaluation).
    """
    unfitted = [o.name for o in objectives if o.stats is None]
    if unfitted:
        raise ConfigError(f"objective {unfitted[0]!r} has no normalization statistics; fit them before training RiC")
    if budget not in BUDGETS:
        raise ConfigError(f"budget {budget!r} is unknown; use one of {', '.join(BUDGETS)}")
    config = RiCConfig.for_budget(budget, model=model, seed=seed, progress=progress)
    workdir = Path(workdir)
    if finished_run(workdir, objectives, config):
        return load_policy(workdir)
    iterations = BUDGETS[budget]["online_iterations"]
    return run_recipe(objectives, workdir, config, online_iterations=iterations, overwrite=is_run_dir(workdir))
