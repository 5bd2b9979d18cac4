"""One LoRA adapter per item of a small grid (MORLHF's preference points, Safe-RLHF's cost thresholds): the stage
that trains them in turn, resumably, and the policy shape that serves them, every adapter on one base with the
one a request maps to switched on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.rundir import COMPUTE_KEYS, RunDirectory

if TYPE_CHECKING:
    from ...generation.policy import GenerationConfig, Response
    from ...training.base import TrainResult


def train_each(run: RunDirectory, key: str, count: int,
               train_one: Callable[[int], tuple[TrainResult, dict[str, Any]]]) -> dict[str, float]:
    """Train items ``0 .. count-1`` in turn; ``train_one(index)`` returns the trainer's result and what to record
    beside it. Each finished item is appended to ``run.manifest[key]`` at once (with its adapter path, relative to
    the run, and its compute), so an interrupted run resumes with the next item; returns the stage's compute."""
    done = run.manifest.setdefault(key, [])
    for index in range(len(done), count):
        started = time.perf_counter()
        result, details = train_one(index)
        done.append({**details, "adapter": str(result.model_dir.relative_to(run.path)), "steps": result.steps,
                     **result.compute, "wall_time_s": round(time.perf_counter() - started, 3)})
        run.save_manifest()
    return {name: round(sum(entry[name] for entry in done), 3) for name in COMPUTE_KEYS}


class AdapterGridPolicy:
    """Adapters (``folders``: label -> adapter folder) loaded on one base, named ``{prefix}{index}``; subclasses map
    a request to an index and sample with :meth:`generate_with`. π_ref is the base with every adapter off."""

    uses_scorers_at_decode = False

    def __init__(self, base_model: Any, tokenizer: Any, folders: Mapping[str, str | os.PathLike], prefix: str,
                 name: str) -> None:
        from ...models.lora import load_adapters

        self.adapter_names = [f"{prefix}{index}" for index in range(len(folders))]
        paths = {label: Path(folder).expanduser() for label, folder in folders.items()}
        self.model = load_adapters(base_model, paths, self.adapter_names)
        self.tokenizer = tokenizer
        self.name = name

    def generate_with(self, index: int, prompts: Sequence[str], config: GenerationConfig,
                      steering: dict[str, Any]) -> list[Response]:
        """Sample ``prompts`` from adapter ``index``; ``steering`` goes into each response's meta."""
        from ...generation import STEERING, generate
        from ...models import set_active_adapter

        set_active_adapter(self.model, self.adapter_names[index])
        responses = generate(self.model, self.tokenizer, prompts, config)
        for response in responses:
            response.meta[STEERING] = dict(steering)
        return responses

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with every adapter off."""
        from ...models.lora import AdapterFreeModel

        return AdapterFreeModel(self.model), self.tokenizer
