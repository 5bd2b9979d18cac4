"""The run directory every command writes: ``manifest.json``, ``metrics.jsonl`` and artifacts.

A directory counts as a previous run when it holds a ``manifest.json`` written by paretoalign; any other
non-empty directory is refused unless the caller asks to overwrite it, so a typo never clobbers user data.

Runs of a method recipe (:meth:`RunDirectory.for_fit`) also carry a **settings fingerprint** (config,
objectives, normalization statistics, base model, seed), a status (``running`` until :meth:`mark_finished`)
and their finished stages with the compute each spent. A second fit into the same folder resumes or reloads
only on a matching fingerprint; ``overwrite`` builds the new run beside the old one and swaps it in only
when it finishes, so an interrupt never loses both.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import first_difference
from .errors import ConfigError
from .files import write_json_atomic

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
RUNNING, FINISHED = "running", "finished"
COMPUTE_KEYS = ("generated_tokens", "trained_tokens", "wall_time_s")
"""What every stage record and every run's ``compute`` total counts: tokens sampled, tokens trained on, seconds."""
_VERSIONED = ("paretoalign", "torch", "transformers", "peft", "accelerate", "trl")


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on (missing ones are omitted)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def is_run_dir(path: str | os.PathLike) -> bool:
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return "paretoalign" in json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


class RunDirectory:
    """A run's folder. ``manifest`` is a dict kept in memory and saved atomically by :meth:`save_manifest`."""

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        method: str,
        overwrite: bool = False,
        resume: bool = False,
        **fields: Any,
    ) -> "RunDirectory":
        """Start a run in ``path``; refuses a non-empty folder that is not a previous run unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output path {str(path)!r} is a file; give a directory")
        if path.is_dir() and any(path.iterdir()):
            if resume and is_run_dir(path):
                return cls.open(path)
            if not overwrite:
                kind = "a previous run" if is_run_dir(path) else "not a paretoalign run"
                raise ConfigError(
                    f"output directory {str(path)!r} exists and is {kind}; "
                    "choose another --out or pass --overwrite"
                )
            if not is_run_dir(path):
                raise ConfigError(
                    f"refusing to overwrite {str(path)!r}: it is not a paretoalign run directory; choose another --out"
                )
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "paretoalign": package_versions().get("paretoalign", "dev"),
            "method": method,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(),
            "artifacts": {},
            **fields,
        }
        run = cls(path, manifest)
        run.save_manifest()
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDirectory":
        path = Path(path)
        if not is_run_dir(path):
            raise ConfigError(f"{str(path)!r} is not a paretoalign run directory (no valid {MANIFEST})")
        return cls(path, json.loads((path / MANIFEST).read_text(encoding="utf-8")))

    @classmethod
    def for_fit(
        cls, path: str | os.PathLike, method: str, fingerprint: dict[str, Any], *, overwrite: bool = False,
        **fields: Any,
    ) -> "RunDirectory":
        """The run a recipe fits into: a fresh one, the same-settings run already there (to resume or reload),
        or with ``overwrite`` a staged replacement beside it. Refuses another method's run and, without
        ``overwrite``, a run fitted with other settings, naming the first setting that differs."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output path {str(path)!r} is a file; give a directory")
        if not (path.is_dir() and any(path.iterdir())):
            return cls._start(path, method, fingerprint, fields)
        if not is_run_dir(path):
            raise ConfigError(f"{str(path)!r} is not empty and not a paretoalign run; choose another --out")
        existing = cls.open(path)
        if existing.method != method:
            raise ConfigError(f"{str(path)!r} holds a {existing.method!r} run, not a {method!r} one; choose another "
                              "--out (--overwrite replaces only a run of the same method)")
        changed = existing.fingerprint_difference(fingerprint)
        if not overwrite:
            if changed:
                raise ConfigError(
                    f"{str(path)!r} was fitted with another {changed} ({_lookup(existing.fingerprint, changed)!r}, "
                    f"not {_lookup(fingerprint, changed)!r}); pass --overwrite to replace it or choose another --out")
            return existing
        staged = staging_path(path)
        if is_run_dir(staged) and not cls.open(staged).fingerprint_difference(fingerprint):
            return cls.open(staged)
        shutil.rmtree(staged, ignore_errors=True)
        return cls._start(staged, method, fingerprint, {**fields, "replaces": str(path)})

    @classmethod
    def _start(cls, path: Path, method: str, fingerprint: dict[str, Any], fields: dict[str, Any]) -> "RunDirectory":
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, {
            "paretoalign": package_versions().get("paretoalign", "dev"), "method": method, "status": RUNNING,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(),
            "fingerprint": fingerprint, "stages": {}, "compute": dict.fromkeys(COMPUTE_KEYS, 0), "artifacts": {},
            **fields,
        })
        run.save_manifest()
        return run

    @property
    def method(self) -> str:
        return str(self.manifest.get("method"))

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.manifest.get("fingerprint", {}))

    @property
    def finished(self) -> bool:
        return self.manifest.get("status") == FINISHED

    @property
    def compute(self) -> dict[str, float]:
        """Totals over every finished stage: generated tokens, trained tokens, wall seconds."""
        return {key: self.manifest.get("compute", {}).get(key, 0) for key in COMPUTE_KEYS}

    def fingerprint_difference(self, fingerprint: dict[str, Any]) -> str | None:
        """The first setting that differs from this run's fingerprint. Normalization statistics are compared
        only when ``fingerprint`` has them (a caller without them takes the run's)."""
        ignore = () if fingerprint.get("normalization") is not None else ("normalization",)
        return first_difference(self.fingerprint, fingerprint, ignore)

    def stage_done(self, name: str) -> bool:
        return name in self.manifest.get("stages", {})

    def record_stage(self, name: str, record: dict[str, Any]) -> None:
        """Mark stage ``name`` finished with its record and add its compute to the run's totals."""
        self.manifest.setdefault("stages", {})[name] = dict(record)
        totals = self.manifest.setdefault("compute", dict.fromkeys(COMPUTE_KEYS, 0))
        for key in COMPUTE_KEYS:
            totals[key] = round(totals.get(key, 0) + record.get(key, 0), 3)
        self.save_manifest()

    def mark_finished(self) -> "RunDirectory":
        """Record the run as finished; a staged replacement is swapped in for the run it replaces."""
        self.manifest["status"] = FINISHED
        target = self.manifest.pop("replaces", None)
        self.save_manifest()
        if target is not None:
            target = Path(target)
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(self.path, target)
            shutil.rmtree(backup, ignore_errors=True)
            self.path = target
        return self

    def save_manifest(self) -> Path:
        return write_json_atomic(self.path / MANIFEST, self.manifest)

    def require_finished(self, method: str) -> "RunDirectory":
        """This run if it is a finished ``method`` run, else ConfigError saying what it is and what to do."""
        if self.method != method:
            raise ConfigError(f"{str(self.path)!r} is a {self.method!r} run, not a {method!r} one; "
                              f"load it with the {self.method!r} method or give a {method} run")
        if not self.finished:
            done = ", ".join(self.manifest.get("stages", {})) or "none"
            raise ConfigError(f"{str(self.path)!r} is an unfinished {method} run (stages done: {done}); "
                              f"finish it with `paretoalign fit {method} --out {self.path}` and the same settings")
        return self

    def add_artifact(self, name: str, relative_path: str, **info: Any) -> None:
        self.manifest.setdefault("artifacts", {})[name] = {"path": relative_path, **info}
        self.save_manifest()

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl`` (flushed, so a crash keeps every finished line)."""
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()


def staging_path(path: str | os.PathLike) -> Path:
    """Where a replacement for the run at ``path`` is built before it is swapped in."""
    path = Path(path)
    return path.with_name(f".{path.name}.next")


def _lookup(mapping: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        mapping = mapping.get(part) if isinstance(mapping, dict) else None
    return mapping
