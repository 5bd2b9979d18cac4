"""The method contract (DESIGN.md "The method contract"): every method is a :class:`Recipe` with a ``Config``
dataclass (presets ``quick`` / ``full``), ``fit(objectives, run_dir, config)`` and ``load(run_dir)``.

``fit`` runs the recipe's stages in order into a run directory with a settings fingerprint, skipping the
stages an interrupted run already finished; ``load`` never trains, and refuses another method's run or an
unfinished one. Heavy libraries are imported inside the methods, so reading a recipe's settings (``fit
METHOD --help``) stays instant.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...core.config import load_config, setting
from ...core.errors import ConfigError
from ...core.rundir import RunDirectory

if TYPE_CHECKING:
    from ...generation.policy import SteerablePolicy
    from ...objectives.base import Objective

RUNTIME_FIELDS = ("device", "progress")
"""Config fields that change where or how verbosely a run goes, not what it trains: left out of fingerprints."""

class Recipe:
    """One method: its settings, how it is fitted (stage by stage) and how its policy is loaded.

    Subclasses set ``name``, ``summary``, ``Config`` (a dataclass with at least ``model`` and ``seed``),
    ``presets`` (field overrides of ``quick`` and ``full``) and ``stages`` (method names run in order, each
    ``stage(run, objectives, config) -> record`` whose record carries the compute keys), and implement
    :meth:`build_policy`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"quick": {}, "full": {}}
    stages: ClassVar[tuple[str, ...]] = ()
    accepts_constraints: ClassVar[bool] = False
    """True when the policy's ``generate`` takes ``constraints=`` (cost bounds such as ``length_cost<=4``)."""
    instant: ClassVar[bool] = False
    """True for methods with nothing to train (base, prompting, best_of_n): ``fit`` only records the plan."""

    # ------------------------------------------------------------------ settings

    def config(self, preset: str = "quick", path: str | os.PathLike | None = None, **overrides: Any) -> Any:
        """The preset's settings, then a YAML file's, then ``overrides`` (later ones win)."""
        if preset not in self.presets:
            raise ConfigError(f"unknown preset {preset!r} for {self.name}; use one of {', '.join(self.presets)}")
        from ...core.config import read_yaml

        values = {**self.presets[preset], **(read_yaml(path) if path is not None else {}), **overrides}
        return load_config(self.Config, None, **values)

    def fingerprint(self, config: Any, objectives: Sequence[Objective]) -> dict[str, Any]:
        """What the run's artifacts depend on: config, objectives, normalization, base model, seed."""
        from ...models import resolve_model_spec

        settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}
        normalization = _normalization(objectives)
        return {"method": self.name, "config": settings, "objectives": objective_specs(objectives),
                "normalization": normalization, "base_model": resolve_model_spec(getattr(config, "model", None)),
                "seed": getattr(config, "seed", 0)}

    # ------------------------------------------------------------------ fit

    def fit(self, objectives: Any, run_dir: str | os.PathLike, config: Any = None, *,
            overwrite: bool = False, until: str | None = None, log: Any = None) -> RunDirectory:
        """Fit into ``run_dir``; resume an interrupted run with the same settings, return a finished one as it
        is, refuse one with other settings (naming the field) unless ``overwrite``. ``until``: stop after that
        stage (the run stays unfinished; a later fit goes on). ``log(message)`` hears what happens."""
        config = self.config() if config is None else self._checked(config)
        if until is not None and until not in self.stages:
            raise ConfigError(f"{self.name} has no stage {until!r}; its stages are {', '.join(self.stages) or 'none'}")
        objectives = resolve_objectives(objectives)
        run = RunDirectory.for_fit(run_dir, self.name, self.fingerprint(config, objectives), overwrite=overwrite)
        say = log or (lambda message: None)
        if run.finished:
            say(f"{run.path} is a finished {self.name} run with these settings; nothing to do")
            return run
        done = [stage for stage in self.stages if run.stage_done(stage)]
        if done:
            say(f"resuming the unfinished {self.name} run in {run.path} (stages done: {', '.join(done)})")
        if self.needs_normalization(config):
            self._ensure_normalization(run, objectives, config)
        for stage in self.stages:
            if run.stage_done(stage):
                continue
            say(f"{self.name}: {stage}")
            started = time.perf_counter()
            record = dict(getattr(self, stage.replace("-", "_"))(run, objectives, config) or {})
            record.setdefault("wall_time_s", round(time.perf_counter() - started, 3))
            run.record_stage(stage, record)
            if stage == until and stage != self.stages[-1]:
                say(f"{self.name}: stopped after {stage}; fit again to go on")
                return run
        return run.mark_finished()

    def needs_normalization(self, config: Any) -> bool:
        """True when the objectives' statistics must exist before the stages run (RL rewards, RiC targets);
        they are then fitted on the base model's answers to the train prompts unless the caller has them."""
        return False

    def _checked(self, config: Any) -> Any:
        if not isinstance(config, self.Config):
            raise ConfigError(f"{self.name} needs a {self.Config.__name__}, got {type(config).__name__}; "
                              f"build it with get_recipe({self.name!r}).config(...)")
        return config

    def _ensure_normalization(self, run: RunDirectory, objectives: Sequence[Objective], config: Any) -> None:
        """Give every objective statistics: the caller's, else the run's stored ones, else fitted now on the base
        model's answers to the train prompts (recorded in the manifest and the fingerprint)."""
        from ...objectives import apply_stats, stats_to_dict

        stored = run.manifest.get("normalization")
        if all(o.stats is not None for o in objectives):
            pass
        elif stored:
            apply_stats(objectives, stored)
        else:
            from .normalization import fit_base_normalization

            fit_base_normalization(objectives, config)
        run.manifest["normalization"] = stats_to_dict(objectives)
        run.manifest["fingerprint"]["normalization"] = run.manifest["normalization"]
        run.save_manifest()

    # ------------------------------------------------------------------ load

    def load(self, run_dir: str | os.PathLike, device: str = "auto", dtype: str = "auto") -> SteerablePolicy:
        """The steerable policy of a finished run of this method; never trains."""
        run = RunDirectory.open(_existing_run(run_dir)).require_finished(self.name)
        objectives = run_objectives(run)
        policy = self.build_policy(run, objectives, device, dtype)
        policy.training_cost = run.compute
        return policy

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> SteerablePolicy:
        """The policy from a finished run's artifacts (subclasses)."""
        raise NotImplementedError

    def settings(self, run: RunDirectory) -> Any:
        """The run's config as this recipe's ``Config`` (runtime fields at their defaults)."""
        return load_config(self.Config, None, **run.fingerprint.get("config", {}))


@dataclass
class InstantConfig:
    """A method with nothing to train: only the base model it runs on."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    seed: int = setting(0, "random seed")


class InstantRecipe(Recipe):
    """A method with nothing to train (base, prompting, best_of_n): ``fit`` records the plan; the policy is
    built on a loaded base model by :meth:`build`."""

    instant = True
    Config = InstantConfig

    def build(self, model: Any, tokenizer: Any, objectives: list[Objective], config: Any) -> SteerablePolicy:
        """The policy on an already loaded base model (the sweep shares one model among instant methods)."""
        raise NotImplementedError

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> SteerablePolicy:
        from ...models import load_model

        config = self.settings(run)
        model, tokenizer = load_model(config.model, device=device, dtype=dtype)
        return self.build(model, tokenizer, objectives, config)


# ---------------------------------------------------------------------- helpers every recipe uses


def resolve_objectives(objectives: Any) -> list[Objective]:
    """Objectives from specs (``"a,b"`` or a list) or given as objects; each keeps the spec that rebuilds it."""
    from ...objectives import load_objectives

    if isinstance(objectives, str) or (objectives and all(isinstance(o, str) for o in objectives)):
        specs = [s.strip() for s in objectives.split(",")] if isinstance(objectives, str) else list(objectives)
        loaded = load_objectives(specs)
        for objective, spec in zip(loaded, specs):
            objective.spec = spec
        return loaded
    loaded = list(objectives or [])
    if not loaded:
        raise ConfigError("no objectives given; pass --objectives a,b (see `paretoalign objectives`)")
    return loaded


def objective_specs(objectives: Sequence[Objective]) -> list[str]:
    """The specs that rebuild ``objectives`` (their names for objectives built without one)."""
    return [getattr(objective, "spec", objective.name) for objective in objectives]


def run_objectives(run: RunDirectory) -> list[Objective]:
    """A run's objectives rebuilt from their specs, with the run's normalization statistics when it has them."""
    from ...objectives import apply_stats

    objectives = resolve_objectives(run.fingerprint.get("objectives") or run.manifest.get("objectives", []))
    stored = run.manifest.get("normalization") or run.fingerprint.get("normalization")
    if stored:
        apply_stats(objectives, stored)
    return objectives


def _normalization(objectives: Sequence[Objective]) -> dict[str, Any] | None:
    from ...objectives import stats_to_dict

    stats = stats_to_dict(objectives)
    return stats if all(value is not None for value in stats.values()) else None


def _existing_run(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"run directory {str(path)!r} does not exist; give the --out folder of a finished fit")
    return path
