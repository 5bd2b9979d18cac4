"""MORLHF (METHODS.md): PPO on the scalarized reward Σ w_i·normalized r_i, one model per preference.

1. :func:`train_morlhf_grid`: one LoRA adapter per point of a coarse preference grid (a simplex lattice),
   each trained by ``training.rl.ppo.MORLHFTrainer`` with the objectives' normalization statistics
   (fitted on the reference model's responses). Compute is recorded in ``compute.json``.
2. :class:`MORLHFPolicy`: every adapter loaded on one base; a preference is served by the adapter whose
   training preference is nearest (Euclidean distance of the weight vectors); switching is
   ``set_active_adapter``, nothing is merged or reloaded.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError
from ..core.files import write_json_atomic
from ..core.preference import Preference
from ..core.rundir import MANIFEST
from ..core.runtime import choose_device, choose_dtype
from ..data import load_prompts
from ..generation import GenerationConfig, Response, generate
from ..models import load_adapter, load_model, resolve_model_spec, set_active_adapter
from ..objectives.base import Objective
from ..training import run_training
from ..training.rl.ppo import MORLHFConfig
from ..models.lora import AdapterFreeModel

METHOD_NAME = "morlhf"
COMPUTE_FILE = "compute.json"
POINTS_DIR = "points"


@dataclass(frozen=True)
class MORLHFBudget:
    """Grid and PPO schedule per point: lattice points per axis, prompts, iterations and their sizes."""

    points_per_axis: int
    prompts: int
    steps: int
    batch_size: int
    minibatch_size: int
    max_new_tokens: int
    lr: float
    ppo_epochs: int = 1
    kl_coef: float = 0.05
    lora_r: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        if self.points_per_axis < 2 or self.steps < 1 or self.prompts < 1:
            raise ConfigError(f"a MORLHF budget needs points_per_axis >= 2, steps >= 1 and prompts >= 1, got "
                              f"{self.points_per_axis}, {self.steps} and {self.prompts}")


BUDGETS: dict[str, MORLHFBudget] = {
    "quick": MORLHFBudget(points_per_axis=3, prompts=32, steps=4, batch_size=8, minibatch_size=4, max_new_tokens=40,
                          lr=3e-4),
    "full": MORLHFBudget(points_per_axis=5, prompts=256, steps=48, batch_size=16, minibatch_size=8,
                         max_new_tokens=96, lr=1e-4, ppo_epochs=2),
}
"""``quick``: 3 grid points with a few PPO iterations each (a few CPU minutes on the default model)."""


def resolve_budget(budget: str | MORLHFBudget) -> MORLHFBudget:
    """A budget preset by name (``quick``, ``full``) or the given :class:`MORLHFBudget`."""
    if isinstance(budget, MORLHFBudget):
        return budget
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def preference_grid(names: Sequence[str], points_per_axis: int) -> list[Preference]:
    """Every preference whose weights are multiples of 1/(points_per_axis − 1): a simplex lattice."""
    steps = points_per_axis - 1
    counts = [c for c in itertools.product(range(steps + 1), repeat=len(names)) if sum(c) == steps]
    return [Preference.parse({name: n / steps for name, n in zip(names, c)}) for c in sorted(counts, reverse=True)]


def train_morlhf_grid(
    objectives: Sequence[Objective],
    workdir: str | os.PathLike,
    *,
    budget: str | MORLHFBudget = "quick",
    model: str | None = None,
    prompts: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Train one MORLHF adapter per grid preference into ``workdir/points``; returns ``{preference: folder}``
    and writes ``workdir/compute.json``. ``prompts`` default to the shipped train instructions."""
    started = time.perf_counter()
    names = [objective.name for objective in objectives]
    if not names:
        raise ConfigError("MORLHF needs at least one objective, e.g. conciseness,relevance")
    plan = resolve_budget(budget)
    prompt_list = list(prompts) if prompts is not None else [r.prompt for r in load_prompts("instructions", "train")]
    records = [{"prompt": prompt} for prompt in prompt_list[: plan.prompts]]
    if not records:
        raise ConfigError("no prompts to train MORLHF on; give at least one prompt")
    model_path = resolve_model_spec(model)
    workdir = Path(workdir)
    points = []
    for index, preference in enumerate(preference_grid(names, plan.points_per_axis)):
        points.append(_train_point(objectives, preference, records, model_path, workdir / POINTS_DIR / f"point{index}",
                                   plan, seed, progress))
    compute = {
        "generated_tokens": sum(point["generated_tokens"] for point in points),
        "trained_tokens": sum(point["trained_tokens"] for point in points),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "objectives": names,
        "base_model": model_path,
        "budget": asdict(plan),
        "points": [{**point, "adapter": str(Path(point["adapter"]).relative_to(workdir))} for point in points],
    }
    write_json_atomic(workdir / COMPUTE_FILE, compute)
    return {point["preference"]: Path(point["adapter"]) for point in points}


def _train_point(
    objectives: Sequence[Objective],
    preference: Preference,
    records: list[dict[str, str]],
    model_path: str,
    output_dir: Path,
    plan: MORLHFBudget,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """PPO of a fresh adapter on ``preference``'s scalarized reward; where it is and what it cost."""
    config = MORLHFConfig(
        model=model_path, output_dir=str(output_dir), overwrite=True, objectives=",".join(o.name for o in objectives),
        preference=str(preference), max_steps=plan.steps, batch_size=plan.batch_size,
        minibatch_size=plan.minibatch_size, ppo_epochs=plan.ppo_epochs, max_new_tokens=plan.max_new_tokens,
        lr=plan.lr, kl_coef=plan.kl_coef, lora_r=plan.lora_r, lora_alpha=plan.lora_alpha,
        mixed_precision="bf16" if choose_dtype(choose_device()) == torch.bfloat16 else "no", seed=seed,
        progress=progress,
    )
    result = run_training("morlhf", config, train_data=records, objectives=list(objectives))
    manifest = json.loads((result.run_dir / MANIFEST).read_text(encoding="utf-8"))
    return {"preference": str(preference), "adapter": str(result.model_dir),
            "steps": result.steps, "generated_tokens": int(manifest["generated_tokens"]),
            "trained_tokens": result.trained_tokens, "wall_time_s": manifest["wall_time_s"]}


def finished_grid(workdir: str | os.PathLike, objectives: Sequence[str]) -> dict[str, Path] | None:
    """The adapters of a finished :func:`train_morlhf_grid` run in ``workdir`` (None when there is none);
    refuses a grid trained for other objectives."""
    path = Path(workdir) / COMPUTE_FILE
    if not path.is_file():
        return None
    compute = json.loads(path.read_text(encoding="utf-8"))
    if list(compute.get("objectives", [])) != list(objectives):
        raise ConfigError(f"{str(workdir)!r} holds MORLHF policies for {', '.join(compute.get('objectives', []))}, "
                          f"not {', '.join(objectives)}; use another folder")
    return {point["preference"]: Path(workdir) / point["adapter"] for point in compute["points"]}


class MORLHFPolicy:
    """One LoRA adapter per trained preference on one base; a request is answered by the nearest one."""

    uses_scorers_at_decode = False

    def __init__(
        self,
        base_model: torch.nn.Module,
        tokenizer: Any,
        adapters: Mapping[str | Preference, str | os.PathLike],
        *,
        name: str = METHOD_NAME,
        training_cost: Mapping[str, Any] | None = None,
    ) -> None:
        if not adapters:
            raise ConfigError("MORLHF needs at least one trained adapter; give {preference: adapter folder}")
        self.points = [Preference.parse(preference) for preference in adapters]
        self.objectives = self.points[0].objectives
        if any(sorted(point.objectives) != sorted(self.objectives) for point in self.points):
            raise ConfigError("every MORLHF adapter must be trained on the same objectives; check the preferences")
        self.adapter_names = [f"point{index}" for index in range(len(self.points))]
        model = base_model
        for adapter_name, folder in zip(self.adapter_names, adapters.values()):
            model = load_adapter(model, folder, adapter_name)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.training_cost = dict(training_cost or {})

    def nearest(self, preference: Preference | None) -> int:
        """Index of the trained preference closest to ``preference`` (the first of equally close ones)."""
        if preference is None:
            raise ConfigError(f"MORLHF needs a preference to pick its model; give weights over {', '.join(self.objectives)}")
        wanted = torch.tensor(preference.vector(self.objectives))
        distances = [float((torch.tensor(point.vector(self.objectives)) - wanted).norm()) for point in self.points]
        return distances.index(min(distances))

    def generate(self, prompts: Sequence[str], preference: Preference | None, config: GenerationConfig) -> list[Response]:
        """Sample from the adapter trained nearest to ``preference``."""
        set_active_adapter(self.model, self.adapter_names[self.nearest(preference)])
        return generate(self.model, self.tokenizer, prompts, config)

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with every adapter off."""
        return AdapterFreeModel(self.model), self.tokenizer


def train_for_demo(
    objectives: list[Objective],
    workdir: Path,
    *,
    budget: str = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MORLHFPolicy:
    """Train (or reload from ``workdir``) the MORLHF grid and serve it; ``training_cost`` counts the
    tokens generated and trained and the wall time of the whole grid."""
    names = [objective.name for objective in objectives]
    adapters = finished_grid(workdir, names)
    if adapters is None:
        adapters = train_morlhf_grid(objectives, workdir, budget=budget, model=model, seed=seed, progress=progress)
    compute = json.loads((Path(workdir) / COMPUTE_FILE).read_text(encoding="utf-8"))
    base_model, tokenizer = load_model(compute["base_model"])
    cost = {key: compute[key] for key in ("generated_tokens", "trained_tokens", "wall_time_s")}
    return MORLHFPolicy(base_model, tokenizer, adapters, training_cost=cost)
