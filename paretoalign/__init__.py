"""paretoalign: align a language model to several objectives and choose the trade-off per request.

The public API is small and stable; names load lazily so ``import paretoalign`` (and the command
line's ``--help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # core
    "Preference": "paretoalign.core",
    "Constraint": "paretoalign.core",
    "ParetoAlignError": "paretoalign.core",
    "ConfigError": "paretoalign.core",
    "PreferenceError": "paretoalign.core",
    "UnknownObjectiveError": "paretoalign.core",
    "DataError": "paretoalign.core",
    "InputFileError": "paretoalign.core",
    "ModelLoadError": "paretoalign.core",
    "MissingDependencyError": "paretoalign.core",
    "TrainingError": "paretoalign.core",
    "RunDirectory": "paretoalign.core",
    "set_seed": "paretoalign.core",
    "weight_grid": "paretoalign.core",
    # data
    "PromptRecord": "paretoalign.data",
    "ScoredResponse": "paretoalign.data",
    "PreferencePair": "paretoalign.data",
    "SafetyPair": "paretoalign.data",
    "read_jsonl": "paretoalign.data",
    "write_jsonl": "paretoalign.data",
    "load_prompts": "paretoalign.data",
    "load_mixture": "paretoalign.data",
    # models
    "load_model": "paretoalign.models",
    "attach_lora": "paretoalign.models",
    "reference_mode": "paretoalign.models",
    "load_score_model": "paretoalign.models",
    "interpolate_models": "paretoalign.models",
    "merge_lora_deltas": "paretoalign.models",
    # objectives
    "Objective": "paretoalign.objectives",
    "NormStats": "paretoalign.objectives",
    "available_objectives": "paretoalign.objectives",
    "get_objective": "paretoalign.objectives",
    "load_objectives": "paretoalign.objectives",
    "register_objective": "paretoalign.objectives",
    "scalarize": "paretoalign.objectives",
    # generation
    "GenerationConfig": "paretoalign.generation",
    "Response": "paretoalign.generation",
    "SteerablePolicy": "paretoalign.generation",
    "BasePolicy": "paretoalign.generation",
    "generate": "paretoalign.generation",
    "kl_to_reference": "paretoalign.generation",
    # training
    "run_training": "paretoalign.training",
    "PreferenceArg": "paretoalign.generation",
    # methods: the recipe contract (fit / load), the registry, and the steerable policies
    "Recipe": "paretoalign.methods",
    "RECIPES": "paretoalign.methods",
    "get_recipe": "paretoalign.methods",
    "load_run": "paretoalign.methods",
    "RiCPolicy": "paretoalign.methods.ric",
    "SoupPolicy": "paretoalign.methods.soups",
    "MODPolicy": "paretoalign.methods.mod",
    "MAVISPolicy": "paretoalign.methods.mavis",
    "MORLHFPolicy": "paretoalign.methods.morlhf",
    # evaluation
    "evaluate": "paretoalign.evaluation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'paretoalign' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
