"""The main job: evaluate every demo-ready method on the embedded default model, on one shared scale.

``run_sweep`` is shared by ``paretoalign demo`` and ``paretoalign eval``: fit normalization on the base
model's responses to the train prompts (or reuse stored statistics), sweep each method over the weight
grid, and write ``results.json``, ``front.png``, ``kl.png`` and ``report.html`` into a run directory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.rundir import RunDirectory
from ..core.runtime import set_seed

DEFAULT_OBJECTIVES = "simplicity,informativeness"

SHARED_ARTIFACTS = {"soups": "objective_policies", "mod": "objective_policies"}
"""Trained methods that share artifacts: Rewarded Soups and MOD use the same per-objective policies
(trained once per sweep; each method still reports their cost as its own build cost)."""


@dataclass(frozen=True)
class DemoPreset:
    """How much work a demo does; ``quick`` fits in 10 minutes on a 2-core CPU."""

    fit_prompts: int
    eval_prompts: int
    samples_per_prompt: int
    max_new_tokens: int
    points_per_axis: int
    best_of_n: int
    temperature: float = 0.7
    batch_size: int = 16
    budget: str = "quick"
    """How much trained methods (RiC, soups, MORLHF, MOD, MAVIS) train: "quick" or "full"."""
    methods: tuple[str, ...] = ("base", "prompting", "best_of_n")
    """What ``paretoalign demo`` sweeps when ``--methods`` is not given."""


PRESETS: dict[str, DemoPreset] = {
    "quick": DemoPreset(fit_prompts=24, eval_prompts=10, samples_per_prompt=1, max_new_tokens=40,
                        points_per_axis=11, best_of_n=4),
    "full": DemoPreset(fit_prompts=128, eval_prompts=48, samples_per_prompt=2, max_new_tokens=96,
                       points_per_axis=11, best_of_n=8, budget="full",
                       methods=("base", "prompting", "best_of_n", "ric", "soups", "morlhf", "mod", "mavis")),
}


@dataclass
class SweepPlan:
    """Everything a sweep needs besides the policies; stored in the run manifest."""

    objectives: str
    methods: Sequence[str]
    preset: DemoPreset
    model: str | None = None
    prompts_file: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    artifacts_from: str | None = None
    """A previous run directory whose trained methods (``methods/NAME``) are reloaded instead of retrained."""


def _eval_prompts(plan: SweepPlan) -> list[str]:
    from ..data import PromptRecord, load_prompts, read_jsonl

    if plan.prompts_file:
        prompts = [record.prompt for record in read_jsonl(plan.prompts_file, PromptRecord)]
    else:
        prompts = [record.prompt for record in load_prompts("instructions", "eval")]
    return prompts[: plan.preset.eval_prompts]


def _generation_config(preset: DemoPreset, seed: int):
    from ..generation import GenerationConfig

    return GenerationConfig(max_new_tokens=preset.max_new_tokens, temperature=preset.temperature,
                            batch_size=preset.batch_size, seed=seed)


def _fit_or_apply_stats(objectives, base_policy, plan: SweepPlan, stats: Mapping[str, Any] | None) -> None:
    from ..data import load_prompts
    from ..evaluation.sweep import fit_reference_normalization
    from ..objectives import apply_stats

    if stats:
        apply_stats(objectives, stats)
        return
    prompts = [record.prompt for record in load_prompts("instructions", "train")][: plan.preset.fit_prompts]
    config = replace(_generation_config(plan.preset, plan.seed + 1000), progress=True)
    fit_reference_normalization(objectives, base_policy, prompts, config)


def run_sweep(plan: SweepPlan, out: str | Path, overwrite: bool = False,
              stats: Mapping[str, Any] | None = None, progress: bool = True) -> RunDirectory:
    """Sweep ``plan.methods`` and write the results, plots and report into the run directory ``out``."""
    from ..evaluation import build_results, plot_front, plot_kl, weight_grid, write_report, write_results
    from ..evaluation.sweep import evaluate
    from ..generation import BasePolicy
    from ..methods import check_method_names
    from ..models import load_model, resolve_model_spec
    from ..objectives import load_objectives, stats_to_dict

    check_method_names(plan.methods)
    objectives = load_objectives(plan.objectives)
    if len(objectives) < 2:
        raise ConfigError("a Pareto sweep needs at least two objectives, e.g. --objectives simplicity,informativeness")
    prompts = _eval_prompts(plan)
    if not prompts:
        raise ConfigError("no prompts to evaluate on; the prompt file is empty")
    run = RunDirectory.create(out, method="sweep", overwrite=overwrite, plan=_plan_dict(plan))
    started = time.perf_counter()
    set_seed(plan.seed)
    model, tokenizer = load_model(plan.model, dtype=plan.dtype, device=plan.device)
    base = BasePolicy(model, tokenizer)
    _fit_or_apply_stats(objectives, base, plan, stats)
    run.manifest.update(base_model=resolve_model_spec(plan.model), normalization=stats_to_dict(objectives))
    run.save_manifest()

    grid = weight_grid([o.name for o in objectives], plan.preset.points_per_axis)
    config = _generation_config(plan.preset, plan.seed)
    sweeps = []
    for name in plan.methods:
        policy = _policy(name, model, tokenizer, objectives, plan, run, progress)
        sweeps.append(evaluate(policy, objectives, prompts, grid, plan.preset.samples_per_prompt, config,
                               progress=progress))
    results = build_results(sweeps, prompts=len(prompts), preset=asdict(plan.preset),
                            base_model=run.manifest["base_model"])
    write_results(run.path / "results.json", results)
    plot_front(results, run.path / "front.png")
    plot_kl(results, run.path / "kl.png")
    write_report(results, run.path / "report.html", title=f"paretoalign: {', '.join(results['objectives'])}")
    for artifact in ("results.json", "front.png", "kl.png", "report.html"):
        run.manifest["artifacts"][artifact] = {"path": artifact}
    run.manifest["seconds"] = round(time.perf_counter() - started, 1)
    run.save_manifest()
    return run


def _policy(name: str, model, tokenizer, objectives, plan: SweepPlan, run: RunDirectory, progress: bool):
    """An instant policy on the loaded base model, or a trained one whose artifacts go into the run directory."""
    from ..methods import build_policy, is_trained, train_policy

    if not is_trained(name):
        return build_policy(name, model, tokenizer, objectives, best_of_n=plan.preset.best_of_n)
    folder = f"methods/{SHARED_ARTIFACTS.get(name, name)}"
    previous = Path(plan.artifacts_from) / folder if plan.artifacts_from else None
    workdir = previous if previous is not None and previous.is_dir() else run.path / folder
    policy = train_policy(name, objectives, workdir, budget=plan.preset.budget, model=plan.model,
                          seed=plan.seed, progress=progress)
    run.add_artifact(f"methods/{name}", str(workdir), kind="method", training_cost=policy.training_cost)
    return policy


def _plan_dict(plan: SweepPlan) -> dict[str, Any]:
    data = asdict(plan)
    data["methods"] = list(plan.methods)
    return data


def summary_table(results: Mapping[str, Any]) -> str:
    """A plain-text table: one row per method with HV, MIP, mean KL, eval tokens, training cost and seconds."""
    header = (f"{'method':<12} {'HV':>7} {'MIP':>7} {'KL':>7} {'front':>6} {'gen tokens':>11} "
              f"{'train tok':>10} {'train s':>8} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for name, method in results["methods"].items():
        mark = " *" if method.get("uses_scorers_at_decode") else ""
        cost = method["cost"]
        train_tokens = cost.get("trained_tokens", 0) + cost.get("training_generated_tokens", 0)
        lines.append(
            f"{name + mark:<12} {method['hypervolume']:>7.3f} {method['mip']:>7.3f} {method['mean_kl']:>7.3f} "
            f"{len(method['front']):>6} {cost['generated_tokens']:>11} {train_tokens:>10} "
            f"{cost.get('training_seconds', 0.0):>8.1f} {cost['seconds']:>8.1f}"
        )
    if any(m.get("uses_scorers_at_decode") for m in results["methods"].values()):
        lines.append("* uses the objective scorers at decode time")
    lines.append("train tok: tokens generated and trained to build the policy; seconds include training")
    return "\n".join(lines)
