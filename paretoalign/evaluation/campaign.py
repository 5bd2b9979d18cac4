"""Sweeps of several methods on one shared scale: the demo's presets and ``run_sweep`` (``paretoalign demo``
and ``paretoalign eval``).

Normalization is fitted on the base model's answers to the train prompts (or taken from a previous run), each
method is fitted (``Recipe.fit`` into ``methods/NAME`` of the sweep's run; instant methods are built on the
loaded base model) and loaded (``Recipe.load``), swept over the weight grid, and ``results.json``,
``front.png``, ``kl.png`` and ``report.html`` are written. Trained methods already fitted with the same
settings in a previous sweep (``artifacts_from``) are copied and reloaded, never retrained.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.rundir import RunDirectory, is_run_dir
from ..methods import DEFAULT_OBJECTIVES  # noqa: F401  (the sweep's default axes)
METHODS_DIR = "methods"
SHARED_SOURCE = "soups"
"""The method a sweep fits first: MOD takes its policies and RiC its base-model samples (``_method_config``)."""
LOCATIONS = ("policies_from", "samples_from")
"""Settings that say where a run's inputs came from, not how it was trained (``_reuse_previous`` ignores them)."""


@dataclass(frozen=True)
class DemoPreset:
    """How much work a sweep does; ``quick`` fits in 10 minutes on a 2-core CPU. ``budget`` is the recipes'
    preset (``quick`` / ``full``) for the methods it fits."""

    fit_prompts: int
    eval_prompts: int
    samples_per_prompt: int
    max_new_tokens: int
    points_per_axis: int
    temperature: float = 0.7
    batch_size: int = 16
    """Rows per decoding batch; quick decodes its whole grid (108 rows) at once (benchmarks/sweep_throughput.py)."""
    budget: str = "quick"
    methods: tuple[str, ...] = ("base", "prompting", "best_of_n", "soups", "mod", "ric")
    """What ``paretoalign demo`` sweeps when ``--methods`` is not given."""


PRESETS: dict[str, DemoPreset] = {
    "quick": DemoPreset(fit_prompts=24, eval_prompts=18, samples_per_prompt=1, max_new_tokens=80,
                        points_per_axis=6, batch_size=128),
    "full": DemoPreset(fit_prompts=128, eval_prompts=48, samples_per_prompt=2, max_new_tokens=96,
                       points_per_axis=11, budget="full",
                       methods=("base", "prompting", "best_of_n", "ric", "soups", "morlhf", "mod", "mavis")),
}
"""``quick`` decodes 18 prompts at 6 weights (0, 0.2, ..., 1): 108 rows, what 10 prompts at 11 weights cost, with each
point's mean over almost twice the prompts, so the rank correlation behind steerability sees less sampling noise."""


@dataclass
class SweepPlan:
    """Everything a sweep needs besides the policies; stored in the run manifest. ``methods``: method names
    (fitted into the sweep) or finished run directories (loaded as they are)."""

    objectives: str
    methods: Sequence[str]
    preset: DemoPreset
    model: str | None = None
    prompts_file: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    artifacts_from: str | None = None
    """A previous sweep whose fitted methods are copied and reloaded when their settings match."""


def run_sweep(plan: SweepPlan, out: str | Path, overwrite: bool = False,
              stats: Mapping[str, Any] | None = None, progress: bool = True) -> RunDirectory:
    """Sweep ``plan.methods`` and write the results, plots and report into the run directory ``out``."""
    from ..core.runtime import set_seed
    from ..generation import BasePolicy
    from ..models import load_model, resolve_model_spec
    from ..objectives import stats_to_dict
    from ..methods.common.recipe import resolve_objectives

    _check_entries(plan.methods)
    objectives = resolve_objectives(plan.objectives)
    if len(objectives) < 2:
        raise ConfigError("a Pareto sweep needs at least two objectives, e.g. --objectives simplicity,informativeness")
    prompts = _eval_prompts(plan)
    if not prompts:
        raise ConfigError("no prompts to evaluate on; the prompt file is empty")
    run = _sweep_run(plan, out, overwrite)
    started = time.perf_counter()
    set_seed(plan.seed)
    model, tokenizer = load_model(plan.model, dtype=plan.dtype, device=plan.device)
    _fit_or_apply_stats(objectives, BasePolicy(model, tokenizer), plan, stats)
    run.manifest.update(base_model=resolve_model_spec(plan.model), normalization=stats_to_dict(objectives))
    run.save_manifest()
    names = entry_names(plan.methods)
    swept = {entry: _sweep_one(entry, names[entry], model, tokenizer, objectives, prompts, plan, run, progress)
             for entry in sorted(plan.methods, key=lambda entry: entry != SHARED_SOURCE)}
    _write_outputs(run, [swept[entry] for entry in plan.methods], prompts, plan)
    run.manifest["seconds"] = round(time.perf_counter() - started, 1)
    return run.mark_finished()


def _check_entries(entries: Sequence[str]) -> None:
    from ..methods import check_method_names

    methods = [entry for entry in entries if not is_run_dir(entry)]
    if methods or not entries:
        check_method_names(methods)
    names = entry_names(entries)
    labels = [names[entry] for entry in entries]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"{repeated[0]!r} is given twice; give each method or run once")


def entry_names(entries: Sequence[str]) -> dict[str, str]:
    """The name each entry's policy gets in the results, decided before anything runs: a method's name, a run
    directory's method, or ``method@path`` for runs whose method another entry also has (two RiC runs)."""
    methods = {entry: RunDirectory.open(entry).method if is_run_dir(entry) else entry for entry in entries}
    taken = list(methods.values())
    return {entry: f"{method}@{entry}" if is_run_dir(entry) and taken.count(method) > 1 else method
            for entry, method in methods.items()}


def _sweep_run(plan: SweepPlan, out: str | Path, overwrite: bool) -> RunDirectory:
    """A fresh sweep run, the unfinished one with this plan (resumed), or with ``overwrite`` a replacement built
    beside the old sweep (whose fitted methods it reuses when their settings match)."""
    fingerprint = {"method": "sweep", "plan": _plan_dict(plan)}
    run = RunDirectory.for_fit(out, "sweep", fingerprint, overwrite=overwrite, plan=_plan_dict(plan))
    if run.finished:
        raise ConfigError(f"{str(out)!r} holds a finished sweep; pass --overwrite to redo it or choose another --out")
    if "replaces" in run.manifest and plan.artifacts_from is None:
        plan.artifacts_from = run.manifest["replaces"]
    return run


def _eval_prompts(plan: SweepPlan) -> list[str]:
    from ..data import DEFAULT_PROMPT_SET, PromptRecord, load_prompts, read_jsonl

    if plan.prompts_file:
        prompts = [record.prompt for record in read_jsonl(plan.prompts_file, PromptRecord)]
    else:
        prompts = [record.prompt for record in load_prompts(DEFAULT_PROMPT_SET, "eval")]
    return prompts[: plan.preset.eval_prompts]


def generation_config(preset: DemoPreset, seed: int) -> Any:
    from ..generation import GenerationConfig

    return GenerationConfig(max_new_tokens=preset.max_new_tokens, temperature=preset.temperature,
                            batch_size=preset.batch_size, seed=seed)


def _fit_or_apply_stats(objectives, base_policy, plan: SweepPlan, stats: Mapping[str, Any] | None) -> None:
    from ..data import DEFAULT_PROMPT_SET, load_prompts
    from ..objectives import apply_stats
    from ..objectives.normalization import fit_reference_normalization

    if stats:
        apply_stats(objectives, stats)
        return
    prompts = [record.prompt for record in load_prompts(DEFAULT_PROMPT_SET, "train")][: plan.preset.fit_prompts]
    config = replace(generation_config(plan.preset, plan.seed + 1000), progress=True)
    fit_reference_normalization(objectives, base_policy, prompts, config)


def _sweep_one(entry: str, name: str, model, tokenizer, objectives, prompts, plan: SweepPlan, run: RunDirectory,
               progress: bool):
    from ..core.preference import weight_grid
    from .sweep import evaluate

    policy = _policy(entry, model, tokenizer, objectives, plan, run, progress)
    policy.name = name
    grid = weight_grid([o.name for o in objectives], plan.preset.points_per_axis)
    return evaluate(policy, objectives, prompts, grid, plan.preset.samples_per_prompt,
                    generation_config(plan.preset, plan.seed), progress=progress)


def _policy(entry: str, model, tokenizer, objectives, plan: SweepPlan, run: RunDirectory, progress: bool):
    """An instant method on the loaded base model, a fitted method of this sweep, or a given finished run."""
    from ..methods import get_recipe, load_run

    if is_run_dir(entry):
        return load_run(entry, device=plan.device, dtype=plan.dtype)
    recipe = get_recipe(entry)
    config = _method_config(recipe, plan, run, progress)
    if recipe.instant:
        return recipe.build(model, tokenizer, objectives, config)
    target = run.path / METHODS_DIR / entry
    _reuse_previous(recipe, entry, config, objectives, plan, target)
    fitted = recipe.fit(objectives, target, config, log=print if progress else None)
    run.add_artifact(f"{METHODS_DIR}/{entry}", f"{METHODS_DIR}/{entry}", kind="method", training_cost=fitted.compute)
    return recipe.load(fitted.path, device=plan.device, dtype=plan.dtype)


def _method_config(recipe, plan: SweepPlan, run: RunDirectory, progress: bool):
    """The recipe's preset for the sweep's budget, on the sweep's model and seed. MOD reuses the soups policies
    the same sweep fitted (same per-objective training), as the papers compare them; RiC learns from the soups
    run's base-model samples (DPO soups draw them), so the sweep samples the base model once."""
    from ..methods import get_recipe

    fields = recipe.Config.__dataclass_fields__
    overrides = {key: value for key, value in (("model", plan.model), ("seed", plan.seed), ("progress", progress),
                                               ("device", plan.device)) if key in fields}
    source = str(run.path / METHODS_DIR / SHARED_SOURCE)
    if SHARED_SOURCE in plan.methods and recipe.name == "mod":
        overrides["policies_from"] = source
    if (SHARED_SOURCE in plan.methods and recipe.name == "ric"
            and get_recipe(SHARED_SOURCE).config(plan.preset.budget).trainer == "dpo"):
        overrides["samples_from"] = source
    return recipe.config(plan.preset.budget, **overrides)


def _reuse_previous(recipe, name: str, config, objectives, plan: SweepPlan, target: Path) -> None:
    """Copy ``name``'s run from the previous sweep when it finished with the same settings."""
    if plan.artifacts_from is None or target.exists():
        return
    previous = Path(plan.artifacts_from) / METHODS_DIR / name
    if not is_run_dir(previous):
        return
    old, fingerprint = RunDirectory.open(previous), recipe.fingerprint(config, objectives)
    located = {**fingerprint, "config": {**fingerprint["config"]}}
    for key in LOCATIONS:
        if key in located["config"]:
            located["config"][key] = old.fingerprint.get("config", {}).get(key)
    if old.finished and old.method == name and old.fingerprint_difference(located) is None:
        shutil.copytree(previous, target)
        copy = RunDirectory.open(target)  # its inputs now come from this sweep's soups (the same ones)
        copy.manifest["fingerprint"]["config"] = fingerprint["config"]
        copy.save_manifest()


def _write_outputs(run: RunDirectory, sweeps, prompts, plan: SweepPlan) -> None:
    from . import build_results, plot_front, plot_kl, write_report, write_results

    results = build_results(sweeps, prompts=len(prompts), preset=asdict(plan.preset),
                            base_model=run.manifest["base_model"])
    write_results(run.path / "results.json", results)
    plot_front(results, run.path / "front.png")
    plot_kl(results, run.path / "kl.png")
    write_report(results, run.path / "report.html", title=f"paretoalign: {', '.join(results['objectives'])}")
    for artifact in ("results.json", "front.png", "kl.png", "report.html"):
        run.manifest["artifacts"][artifact] = {"path": artifact}


def _plan_dict(plan: SweepPlan) -> dict[str, Any]:
    data = asdict(plan)
    data["methods"] = list(plan.methods)
    data.pop("artifacts_from")
    return data


def summary_table(results: Mapping[str, Any]) -> str:
    """A plain-text table: one row per method with HV, MIP, mean KL, eval tokens, training cost and seconds."""
    width = max(12, *(len(name) + 2 for name in results["methods"]))  # "* " marks scorer-using methods
    header = (f"{'method':<{width}} {'HV':>7} {'MIP':>7} {'KL':>7} {'steer':>6} {'cut':>5} {'front':>6} "
              f"{'gen tokens':>11} {'train tok':>10} {'train s':>8} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for name, method in results["methods"].items():
        mark = " *" if method.get("uses_scorers_at_decode") else ""
        cost = method["cost"]
        train_tokens = cost.get("trained_tokens", 0) + cost.get("training_generated_tokens", 0)
        steer = method.get("min_steerability")
        lines.append(
            f"{name + mark:<{width}} {method['hypervolume']:>7.3f} {method['mip']:>7.3f} {method['mean_kl']:>7.3f} "
            f"{'-' if steer is None else f'{steer:.2f}':>6} {method.get('cut_off', 0.0):>5.0%} "
            f"{len(method['front']):>6} {cost['generated_tokens']:>11} {train_tokens:>10} "
            f"{cost.get('training_seconds', 0.0):>8.1f} {cost['seconds']:>8.1f}"
        )
    if any(m.get("uses_scorers_at_decode") for m in results["methods"].values()):
        lines.append("* uses the objective scorers at decode time")
    lines.append("steer: the lowest over the objectives of the Spearman correlation between an objective's weight and "
                 "its reward (1 = steers exactly; - = does not vary); cut: answers stopped at max_new_tokens")
    lines.append("train tok: tokens generated and trained to build the policy; seconds include training")
    return "\n".join(lines)
