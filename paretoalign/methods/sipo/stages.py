"""SIPO's stage bodies (see ``recipe``): each reads the previous stage's file under ``data/``, writes its own
atomically when done and counts what survives in ``run.manifest["survivors"]``. Every model the stages build
holds the policies in the run's objective order (``rules.ordered_folders``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, DataError
from ...core.preference import Preference
from ...core.rundir import COMPUTE_KEYS, RunDirectory
from ...data import PreferencePair, ScoredResponse, read_jsonl, write_jsonl
from ...generation import GenerationConfig
from ...objectives.base import Objective
from ..common.mod_policy import MODPolicy, load_mod_policy
from ..common.base_samples import SAMPLES_FILE
from ..common.objective_policies import (
    check_objectives,
    policy_folders,
    sample_candidates,
    train_dpo_adapter,
    train_each,
    train_policies,
)
from ..common.reuse import copy_policies, reusable_run
from .data import dataset_conflicts, dataset_labels, labelled_pairs, read_dataset, sample_conflicts
from .recipe import SIPOConfig
from .rewards import ImplicitRewards
from .rules import (
    best_survivor,
    fill,
    filter_margin,
    keep_rewrite,
    objectives_text,
    ordered_folders,
    sample_weights,
    select_conflicts,
)

CONFLICTS_FILE = "data/conflicts.jsonl"
MOD_SAMPLES_FILE = "data/mod_samples.jsonl"
REVIEWS_FILE = "data/reviews.jsonl"
REWRITES_FILE = "data/rewrites.jsonl"
COMBINED_FILE = "data/combined.jsonl"
FILTERED_FILE = "data/filtered.jsonl"
REALIGNED = "realigned"
SAMPLING = ("trainer", "prompts", "samples", "max_new_tokens", "temperature", "steered", "seed")
"""The settings that decide the base model's samples (with the base model)."""
SURVIVORS = "survivors"
"""Manifest entry: how many prompts, samples and candidates are left after each stage."""


# ---------------------------------------------------------------------- 1. first alignment, 2. conflicts


def first_align(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """One DPO policy per objective; first checks that the objectives' pairs conflict somewhere, so a run with
    nothing to improve stops before training."""
    names = objective_names(objectives)
    sample_weights(names, config.sample_steps)
    source = None if config.policies_from is None else reusable_run(run, objectives, Path(config.policies_from))
    sampled = _base_samples(run, objectives, config, source)
    _conflicts(run, objectives, config)
    if config.policies_from is not None:
        trained = copy_policies(run, objectives, Path(config.policies_from))
    elif config.dataset is None:
        trained = train_policies(run, objectives, config)
    else:
        trained = _train_on_dataset(run, objectives, config)
    return {**trained, **{key: round(trained.get(key, 0) + sampled.get(key, 0), 3) for key in COMPUTE_KEYS}}


def conflicts(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """Write the conflicting pairs the run improves on: one per prompt, capped, in hash order."""
    found, selected = _conflicts(run, objectives, config)
    write_jsonl(run.path / CONFLICTS_FILE, selected)
    _survive(run, conflicting_prompts=len(selected))
    return {"conflicting_pairs": len(found), "conflicting_prompts": len(selected), "generated_tokens": 0,
            "trained_tokens": 0}


def _base_samples(run: RunDirectory, objectives: list[Objective], config: SIPOConfig,
                  source: RunDirectory | None) -> dict:
    """The base model's samples the default pairs and conflicts come from (none with a dataset); kept across an
    interrupted first_align."""
    if config.dataset is not None:
        return {}
    if "base_samples" not in run.manifest:
        started = time.perf_counter()
        drawn = _reused_samples(run, source, config) or sample_candidates(run, objectives, config)
        run.manifest["base_samples"] = {**drawn, "wall_time_s": round(time.perf_counter() - started, 3)}
        run.save_manifest()
    return run.manifest["base_samples"]


def _reused_samples(run: RunDirectory, source: RunDirectory | None, config: SIPOConfig) -> dict | None:
    """The ``policies_from`` run's base samples, copied when it drew them with this run's settings (their cost is
    already in the copied policies' compute)."""
    if source is None or not (source.path / SAMPLES_FILE).is_file():
        return None
    theirs = source.fingerprint.get("config", {})
    if any(theirs.get(name) != getattr(config, name) for name in SAMPLING):
        return None
    (run.path / SAMPLES_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.path / SAMPLES_FILE, run.path / SAMPLES_FILE)
    return {"generated_tokens": 0, "trained_tokens": 0, "copied_from": str(source.path)}


def _conflicts(run: RunDirectory, objectives: list[Objective], config: SIPOConfig):
    """(every conflicting pair found, the selected ones); DataError when there are none."""
    if config.dataset is not None:
        records = read_dataset(config.dataset, config.seed)
        found, source = dataset_conflicts(records, dataset_labels(objectives, config.labels)), config.dataset
    else:
        groups: dict[str, list[str]] = {}
        for row in read_jsonl(run.path / SAMPLES_FILE, ScoredResponse):
            groups.setdefault(row.prompt, []).append(row.response)
        found = sample_conflicts(list(groups), list(groups.values()), objectives)
        source = "the base model's samples"
    selected = select_conflicts(found, config.conflict_prompts)
    if not selected:
        raise DataError(f"no conflicting prompts: {', '.join(o.name for o in objectives)} order no pair of {source} "
                        "differently, so SIPO has nothing to improve and stopped (nothing written); use objectives "
                        "that disagree, more prompts or samples, or a dataset whose labels conflict")
    return found, selected


def _train_on_dataset(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """DPO of each objective's policy on the dataset's pairs labelled with the objective's label."""
    labels = dict(zip((o.name for o in objectives), dataset_labels(objectives, config.labels)))
    pairs = labelled_pairs(read_dataset(config.dataset, config.seed), list(labels.values()))

    def train_one(name: str, output_dir: Path):
        result, details = train_dpo_adapter(pairs[labels[name]], output_dir, config)
        return result, {**details, "label": labels[name]}

    return train_each(run, list(labels), train_one)


# ---------------------------------------------------------------------- 3.-5. MOD sample, review, rewrite


def sample(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """One MOD answer of the first-round policies per conflicting prompt and sampling weight."""
    names = objective_names(objectives)
    pairs = read_jsonl(run.path / CONFLICTS_FILE, PreferencePair)
    rows = [{"prompt": pair.prompt, "weights": weights.as_dict()}
            for pair in pairs for weights in sample_weights(names, config.sample_steps)]
    texts, tokens = _mod_generate(run, names, config, [row["prompt"] for row in rows], rows, config.max_new_tokens)
    write_jsonl(run.path / MOD_SAMPLES_FILE, [{**row, "response": text} for row, text in zip(rows, texts)])
    _survive(run, mod_samples=len(rows))
    return {"samples": len(rows), "generated_tokens": tokens, "trained_tokens": 0}


def review(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """MOD at each sample's weights writes suggestions to improve it on the objectives."""
    described = objectives_text(objectives)
    return _mod_pass(run, objectives, config, MOD_SAMPLES_FILE, REVIEWS_FILE, "review", config.review_tokens,
                     lambda row: fill(config.review_template, row["prompt"], row["response"], described))


def rewrite(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """MOD at each sample's weights rewrites it given its review."""
    described = objectives_text(objectives)
    return _mod_pass(run, objectives, config, REVIEWS_FILE, REWRITES_FILE, "rewrite", config.max_new_tokens,
                     lambda row: fill(config.rewrite_template, row["prompt"], row["response"], described,
                                      row["review"]))


def _mod_pass(run: RunDirectory, objectives: list[Objective], config: SIPOConfig, source: str, target: str,
              field: str, max_new_tokens: int, prompt_of: Callable[[dict[str, Any]], str]) -> dict:
    """One MOD generation per row of ``source`` at the row's weights, from ``prompt_of(row)``; the rows with the
    text under ``field`` go to ``target``, and the non-empty texts are counted."""
    rows = read_jsonl(run.path / source)
    prompts = [prompt_of(row) for row in rows]
    texts, tokens = _mod_generate(run, objective_names(objectives), config, prompts, rows, max_new_tokens)
    write_jsonl(run.path / target, [{**row, field: text} for row, text in zip(rows, texts)])
    _survive(run, **{f"{field}s": sum(bool(text.strip()) for text in texts)})
    return {f"{field}s": len(rows), "generated_tokens": tokens, "trained_tokens": 0}


def first_round_policy(run: RunDirectory, names: Sequence[str], config: SIPOConfig) -> MODPolicy:
    """MOD over the first-round policies, in objective order."""
    return load_mod_policy(adapters=ordered_folders(policy_folders(run), names), base=config.model,
                           device=config.device, name="sipo first round")


def _mod_generate(run: RunDirectory, names: Sequence[str], config: SIPOConfig, prompts: list[str],
                  rows: list[dict[str, Any]], max_new_tokens: int) -> tuple[list[str], int]:
    """Texts of MOD over the first-round policies, row i at ``rows[i]["weights"]``, and the tokens generated."""
    policy = first_round_policy(run, names, config)
    generation = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=1, temperature=config.mod_temperature,
                                  seed=config.seed, batch_size=16, progress=config.progress)
    # One seed group for the call: a prompt drawn under several weights gets a distinct seed for each, so its
    # candidates differ by more than the fusion weights (seeds per preference would repeat one draw per weight).
    responses = policy.generate(prompts, [Preference.parse(row["weights"]) for row in rows], generation,
                                seed_groups=[None] * len(rows))
    return [response.text for response in responses], sum(len(response.token_ids) for response in responses)


# ---------------------------------------------------------------------- 6. combine, 7. filter


def combine(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """Each sample's candidate: its rewrite when that is a Pareto improvement under the first-round policies'
    implicit rewards (``rules.keep_rewrite``), else the sample itself."""
    names = objective_names(objectives)
    rows = read_jsonl(run.path / REWRITES_FILE)
    prompts = [row["prompt"] for row in rows]
    rewards = first_round_rewards(run, names, config)(prompts + prompts, [row["response"] for row in rows]
                                                      + [row["rewrite"] for row in rows], _one_hot(len(names)))
    combined, kept = [], 0
    for index, row in enumerate(rows):
        before, after = rewards[:, index], rewards[:, len(rows) + index]
        keep = bool(row["rewrite"].strip()) and keep_rewrite(before, after)
        kept += keep
        combined.append({"prompt": row["prompt"], "weights": row["weights"],
                         "candidate": row["rewrite"] if keep else row["response"],
                         "source": "rewrite" if keep else "sample",
                         "sample_rewards": dict(zip(names, before.tolist())),
                         "rewrite_rewards": dict(zip(names, after.tolist()))})
    write_jsonl(run.path / COMBINED_FILE, combined)
    _survive(run, rewrites_kept=kept)
    return {"candidates": len(combined), "rewrites_kept": kept, "generated_tokens": 0, "trained_tokens": 0}


def filter_candidates(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """Per conflicting prompt, at most one candidate that beats both its chosen and rejected answer under every
    objective's policy and their interpolations at the sampling weights (``rules.filter_margin``)."""
    names = objective_names(objectives)
    pairs = {pair.prompt: pair for pair in read_jsonl(run.path / CONFLICTS_FILE, PreferencePair)}
    rows = read_jsonl(run.path / COMBINED_FILE)
    weights = _one_hot(len(names)) + [w.vector(names) for w in sample_weights(names, config.sample_steps)]
    order = list(pairs)
    prompts = [row["prompt"] for row in rows] + order + order
    texts = [row["candidate"] for row in rows] + [pairs[p].chosen for p in order] + [pairs[p].rejected for p in order]
    rewards = first_round_rewards(run, names, config)(prompts, texts, weights)
    chosen_at = {prompt: len(rows) + i for i, prompt in enumerate(order)}
    kept = []
    for prompt in order:
        indices = [i for i, row in enumerate(rows) if row["prompt"] == prompt]
        chosen, rejected = rewards[:, chosen_at[prompt]], rewards[:, chosen_at[prompt] + len(order)]
        margins = [filter_margin(rewards[:, i], chosen, rejected) for i in indices]
        best = best_survivor(margins)
        if best is not None:
            row = rows[indices[best]]
            kept.append({"prompt": prompt, "candidate": row["candidate"], "chosen": pairs[prompt].chosen,
                         "rejected": pairs[prompt].rejected, "source": row["source"], "weights": row["weights"],
                         "margin": margins[best]})
    if not kept:
        raise DataError(f"no candidate beat both the chosen and the rejected answer under all {len(weights)} filter "
                        f"policies ({len(rows)} candidates on {len(order)} prompts), so there is nothing to re-align "
                        "on (nothing written); raise conflict_prompts or sample_steps, or train the first round longer")
    write_jsonl(run.path / FILTERED_FILE, kept)
    _survive(run, filtered_prompts=len(kept))
    return {"filter_policies": len(weights), "filtered_prompts": len(kept),
            "from_rewrites": sum(row["source"] == "rewrite" for row in kept), "generated_tokens": 0,
            "trained_tokens": 0}


def first_round_rewards(run: RunDirectory, names: Sequence[str], config: SIPOConfig) -> ImplicitRewards:
    """Implicit rewards β·Δ under the first-round policies (β: the first round's DPO β)."""
    return ImplicitRewards(policy_folders(run), names, config.model, beta=config.beta, device=config.device)


def _one_hot(count: int) -> list[list[float]]:
    return [[1.0 if i == k else 0.0 for i in range(count)] for k in range(count)]


# ---------------------------------------------------------------------- 8. re-align, 9. the policy


def realign(run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
    """DPO + NLL of each first-round policy on (y* ≻ chosen) and (y* ≻ rejected); finished policies are kept
    when an interrupted run resumes."""
    names = objective_names(objectives)
    rows = read_jsonl(run.path / FILTERED_FILE)
    pairs = [{"prompt": row["prompt"], "chosen": row["candidate"], "rejected": row[side]}
             for row in rows for side in ("chosen", "rejected")]
    first = ordered_folders(policy_folders(run), names)
    compute = train_each(run, names, lambda name, output_dir: realign_adapter(first[name], pairs, output_dir, config),
                         key=REALIGNED, folder=REALIGNED)
    _survive(run, realign_pairs=len(pairs))
    return {**compute, "pairs": len(pairs)}


def realign_trainer(first_round: Path, pairs: list[dict[str, str]], output_dir: Path, config: SIPOConfig):
    """The DPO + NLL trainer of one re-alignment: the policy starts as the first-round adapter, and π_ref is that
    same first-round policy (its log-probabilities stored before the first step); NLL of y* per response token."""
    from ...core.runtime import autocast_precision
    from ...models import load_model
    from ...models.lora import load_adapter
    from ...training import DPOConfig
    from ...training.dpo import DPOTrainer

    model, tokenizer = load_model(config.model, dtype="float32", device="cpu")
    policy = load_adapter(model, first_round, trainable=True)
    dpo = DPOConfig(model=config.model, output_dir=str(output_dir), overwrite=True, loss="dpo_nll",
                    beta=config.realign_beta, alpha=config.realign_alpha, precompute_reference=True,
                    epochs=config.realign_epochs, lr=config.realign_lr, batch_size=config.batch_size,
                    max_length=config.max_length, seed=config.seed, device=config.device,
                    mixed_precision=autocast_precision(config.device), progress=config.progress)
    return DPOTrainer(dpo, pairs, model=policy, tokenizer=tokenizer)


def realign_adapter(first_round: Path, pairs: list[dict[str, str]], output_dir: Path, config: SIPOConfig):
    """Train one re-aligned adapter; (TrainResult, details) for ``train_each``."""
    result = realign_trainer(first_round, pairs, output_dir, config).train()
    return result, {"trainer": "dpo_nll", "pairs": len(pairs), "steps": result.steps}


def realigned_policy(run: RunDirectory, objectives: list[Objective], config: SIPOConfig, *, device: str = "auto",
                     dtype: str = "auto") -> MODPolicy:
    """SIPO's steerable policy: MOD over the re-aligned policies, in objective order."""
    folders = {name: run.path / entry["adapter"] for name, entry in run.manifest.get(REALIGNED, {}).items()}
    lost = [name for name, folder in folders.items() if not folder.is_dir()]
    if lost:
        raise ConfigError(f"{str(run.path)!r} has lost its re-aligned policy for {lost[0]!r}; refit it with "
                          "`paretoalign fit sipo --overwrite` and the same settings")
    names = [objective.name for objective in objectives]
    return load_mod_policy(adapters=ordered_folders(folders, names), base=config.model, device=device, dtype=dtype,
                           name="sipo")


# ---------------------------------------------------------------------- helpers


def objective_names(objectives: list[Objective]) -> list[str]:
    """The objective names; SIPO needs two or more (it improves where they disagree)."""
    if len(objectives) < 2:
        raise ConfigError(f"SIPO needs at least two objectives (it improves answers where they disagree); got "
                          f"{', '.join(o.name for o in objectives) or 'none'}")
    return check_objectives(objectives)


def _survive(run: RunDirectory, **counts: int) -> None:
    run.manifest.setdefault(SURVIVORS, {}).update(counts)
