"""Typed errors. Each message is one line: what is wrong, then how to fix it.

The command line turns any ``ParetoAlignError`` into that line and exit status 2; library users
catch the subclass they care about.
"""

from __future__ import annotations


class ParetoAlignError(Exception):
    """Base class for every error a user can cause."""


class ConfigError(ParetoAlignError, ValueError):
    """A setting, flag or config value is invalid."""


class PreferenceError(ConfigError):
    """Preference weights or a constraint spec are malformed."""


class UnknownObjectiveError(ConfigError, KeyError):
    """An objective name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputFileError(ParetoAlignError, OSError):
    """A file is missing, unreadable, or has the wrong kind."""


class DataError(ParetoAlignError, ValueError):
    """A dataset record is malformed or misses a field."""


class ModelLoadError(ParetoAlignError):
    """A model or tokenizer cannot be loaded from what was given."""


class JudgeError(ParetoAlignError, RuntimeError):
    """A judge backend failed (server unreachable after retries, an answer that is not a completion)."""


class MissingDependencyError(ParetoAlignError, ImportError):
    """An optional package needed for this feature is not installed."""


class TrainingError(ParetoAlignError, RuntimeError):
    """Training cannot go on (e.g. NaN loss, incompatible resume)."""


def require(module: str, feature: str, package: str | None = None):
    """Import ``module`` or raise MissingDependencyError naming the pip package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the '{package or module}' package; install it with "
            f"`pip install {package or module}`"
        ) from exc
