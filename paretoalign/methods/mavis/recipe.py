"""The MAVIS recipe (METHODS.md): value models from reference trees, refined by iterations on the
single-objective MAVIS policies' own trees with soft-value targets, then decoding with their weighted sum.

    iteration 0:  trees from π_ref                    -> V_i fitted to Monte-Carlo values
    iteration t:  trees from MAVIS(V_i, weight 1 on i) -> V_i trained further on value − η·future KL
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...core.errors import ConfigError
from ...core.files import write_json_atomic
from ...core.runtime import set_seed
from ...generation.value_guided import GuidanceSettings
from ...objectives import stats_to_dict
from ...objectives.base import Objective
from ...training.config import ValueModelConfig
from .policy import MAVISPolicy
from .trees import TreeSampler, TreeShape, collect_trees, value_records, write_shard
from .values import load_value_model, train_value_model

RECIPE_FILE = "mavis.json"


@dataclass
class MAVISRecipe:
    """Everything one MAVIS build needs besides the model and objectives."""

    shape: TreeShape = field(default_factory=TreeShape)
    prompts: int = 64
    iterations: int = 1
    eta: float = 0.02
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    """Decoding of the returned policy and of iterations ≥ 1's trees."""
    value: dict = field(default_factory=lambda: {"max_steps": 100, "batch_size": 8, "lr": 1e-4, "lora_r": 16})
    """ValueModelConfig fields of every value-model training."""
    token_head: bool = False
    sample_batch_size: int = 16


BUDGETS = {
    "quick": MAVISRecipe(
        shape=TreeShape(root_branching=2, branching=2, depth=3, chunk_min=6, chunk_max=10),
        prompts=8, iterations=1,
        guidance=GuidanceSettings(beta=2.0, top_k=10),
        value={"max_steps": 12, "batch_size": 8, "lr": 3e-4, "lora_r": 8, "max_length": 256},
    ),
    "full": MAVISRecipe(
        shape=TreeShape(), prompts=64, iterations=2,
        guidance=GuidanceSettings(beta=2.0, top_k=40),
        value={"max_steps": 200, "batch_size": 8, "lr": 1e-4, "lora_r": 16, "max_length": 512},
    ),
}


@dataclass
class TrainingCost:
    """Compute spent building the value models (the compute-vs-front comparison reads these keys)."""

    generated_tokens: int = 0
    trained_tokens: int = 0
    wall_time_s: float = 0.0


def _tree_tokens(table) -> int:
    return sum(len(chunk) for chunk, depth in zip(table["tokens"].to_pylist(), table["depth"].to_pylist()) if depth)


def build_value_models(
    reference_model,
    tokenizer,
    objectives: Sequence[Objective],
    prompts: Sequence[str],
    workdir: Path,
    recipe: MAVISRecipe,
    *,
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, Path], TrainingCost]:
    """Run the iterations; returns each objective's final value-model folder and the compute spent.

    Artifacts: ``trees/iter<t>[-<objective>].parquet`` and ``values/<objective>/iter<t>/`` (training runs).
    """
    if recipe.iterations < 1:
        raise ConfigError(f"MAVIS needs at least 1 iteration, got {recipe.iterations}")
    cost = TrainingCost()
    started = time.perf_counter()
    sampler = TreeSampler(reference_model, tokenizer, batch_size=recipe.sample_batch_size)
    table = collect_trees(sampler, prompts, objectives, recipe.shape, seed=seed, shard="iter0")
    write_shard(table, workdir / "trees" / "iter0.parquet")
    cost.generated_tokens += _tree_tokens(table)
    folders: dict[str, Path] = {}
    for objective in objectives:
        folders[objective.name], trained = _train(table, objective.name, 0.0, workdir, 0, model, recipe, seed, progress)
        cost.trained_tokens += trained
    for iteration in range(1, recipe.iterations):
        for objective in objectives:
            value_model, _ = load_value_model(folders[objective.name], device=reference_model.device)
            guided = TreeSampler(reference_model, tokenizer, [(1.0, value_model)], recipe.guidance,
                                 batch_size=recipe.sample_batch_size)
            table = collect_trees(guided, prompts, [objective], recipe.shape, seed=seed + iteration,
                                  shard=f"iter{iteration}", policy=f"mavis:{objective.name}")
            write_shard(table, workdir / "trees" / f"iter{iteration}-{objective.name}.parquet")
            cost.generated_tokens += _tree_tokens(table)
            folders[objective.name], trained = _train(table, objective.name, recipe.eta, workdir, iteration,
                                                      str(folders[objective.name]), recipe, seed, progress)
            cost.trained_tokens += trained
    cost.wall_time_s = round(time.perf_counter() - started, 3)
    return folders, cost


def _train(table, objective: str, eta: float, workdir: Path, iteration: int, start_from: str | None,
           recipe: MAVISRecipe, seed: int, progress: bool) -> tuple[Path, int]:
    config = ValueModelConfig(**{
        "dtype": "float32", "scheduler": "constant", **recipe.value,
        "model": start_from, "output_dir": str(workdir / "values" / objective / f"iter{iteration}"),
        "seed": seed, "progress": progress, "overwrite": True,
    })
    result = train_value_model(value_records(table, objective, eta), config, token_head=recipe.token_head)
    return result.model_dir, result.trained_tokens


def train_for_demo(
    objectives: list[Objective],
    workdir: Path,
    *,
    budget: str = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MAVISPolicy:
    """Value models for ``objectives`` (with their normalization stats) on the default model, sized by
    ``budget``; returns the MAVIS policy with ``training_cost``. A ``workdir`` finished for the same
    objectives, statistics and budget is reloaded instead of retrained."""
    from ...data import load_prompts
    from ...models import load_model

    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    recipe = BUDGETS[budget]
    workdir = Path(workdir)
    reference_model, tokenizer = load_model(model)
    saved = workdir / RECIPE_FILE
    names, stats = [objective.name for objective in objectives], stats_to_dict(objectives)
    record = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    if record.get("objectives") == names and record.get("stats") == stats and record.get("budget") == budget:
        folders, cost = {name: workdir / path for name, path in record["value_models"].items()}, TrainingCost(**record["cost"])
    else:
        set_seed(seed)
        prompts = [prompt.prompt for prompt in load_prompts("instructions", "train")][: recipe.prompts]
        folders, cost = build_value_models(reference_model, tokenizer, objectives, prompts, workdir, recipe,
                                           model=model, seed=seed, progress=progress)
        write_json_atomic(saved, {
            "objectives": names, "stats": stats, "budget": budget, "seed": seed, "cost": asdict(cost),
            "value_models": {name: str(path.relative_to(workdir)) for name, path in folders.items()},
            "recipe": asdict(recipe),
        })
    policy = MAVISPolicy(reference_model, tokenizer, folders, **asdict(recipe.guidance))
    policy.training_cost = asdict(cost)
    return policy
