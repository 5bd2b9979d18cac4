"""Layer 1: preferences, constraints, errors, seeding, devices, files."""

from .errors import (
    ConfigError,
    DataError,
    InputFileError,
    MissingDependencyError,
    ModelLoadError,
    ParetoAlignError,
    PreferenceError,
    TrainingError,
    UnknownObjectiveError,
)
from .files import atomic_path, existing_file, write_json_atomic, write_text_atomic
from .preference import Constraint, Preference, parse_constraints, weight_grid
from .runtime import autocast_precision, choose_device, choose_dtype, set_seed

__all__ = [
    "ConfigError",
    "Constraint",
    "DataError",
    "InputFileError",
    "MissingDependencyError",
    "ModelLoadError",
    "ParetoAlignError",
    "Preference",
    "PreferenceError",
    "TrainingError",
    "UnknownObjectiveError",
    "atomic_path",
    "autocast_precision",
    "choose_device",
    "choose_dtype",
    "existing_file",
    "parse_constraints",
    "set_seed",
    "weight_grid",
    "write_json_atomic",
    "write_text_atomic",
]

from .rundir import RunDirectory, is_run_dir  # noqa: E402

__all__ += ["RunDirectory", "is_run_dir"]
