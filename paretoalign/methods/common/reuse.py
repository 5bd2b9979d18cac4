"""Reusing a finished run's per-objective policies instead of training them again (MOD's and SIPO's
``policies_from``): the adapters are copied in and their build cost counts as the new run's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import ConfigError
from ...core.rundir import RunDirectory
from .objective_policies import POLICIES_DIR, policy_folders

if TYPE_CHECKING:
    from ...objectives.base import Objective

REUSABLE = ("soups", "mod")
"""Methods whose run holds one policy per objective under ``policies``."""


def reusable_run(run: RunDirectory, objectives: list[Objective], source_dir: Path) -> RunDirectory:
    """The finished soups or mod run at ``source_dir``, checked before anything is copied: refuses a run of another
    method, of other objectives or on another base model."""
    source = RunDirectory.open(source_dir)
    if source.method not in REUSABLE or not source.finished:
        raise ConfigError(f"policies_from {str(source_dir)!r} is not a finished soups or mod run; fit one first")
    base, theirs = run.fingerprint.get("base_model"), source.fingerprint.get("base_model")
    if base != theirs:
        raise ConfigError(f"policies_from {str(source_dir)!r} was fitted on {theirs!r}, this run uses {base!r}; "
                          "per-objective policies must share the base model (and its tokenizer)")
    folders = policy_folders(source)
    missing = [o.name for o in objectives if o.name not in folders]
    if missing:
        raise ConfigError(f"{str(source_dir)!r} has no policy for {missing[0]!r} (it has {', '.join(folders)}); "
                          "fit it with the same objectives")
    return source


def copy_policies(run: RunDirectory, objectives: list[Objective], source_dir: Path) -> dict:
    """Copy a finished soups or mod run's per-objective adapters into ``run`` (``manifest["policies"]``, in the
    order of ``objectives``); checked by :func:`reusable_run` first."""
    source = reusable_run(run, objectives, source_dir)
    folders, entries = policy_folders(source), source.manifest["policies"]
    copied = {}
    for objective in objectives:
        target = run.path / POLICIES_DIR / Path(entries[objective.name]["adapter"]).parent.name / "model"
        shutil.copytree(folders[objective.name], target, dirs_exist_ok=True)
        copied[objective.name] = {**entries[objective.name], "adapter": str(target.relative_to(run.path))}
    run.manifest["policies"] = copied
    return {**source.compute, "copied_from": str(source_dir)}
