"""Issue 4 on the embedded default model, reduced to about a minute each (the examples run the full claims).

- DPO on conciseness-labelled pairs shortens answers on eval prompts: ``examples/dpo_concise.py`` with
  fewer prompts and steps, asserting the same effect (DPO mean words / base mean words < 0.9).
- A reward model trained on friendliness-labelled pairs, saved and loaded back as an objective, orders
  held-out pairs (from eval-split prompts, labelled the same way) as friendliness does, >= 0.8:
  ``examples/reward_model_friendliness.py`` with shorter responses (the longest test here: fewer
  prompts fell below 0.8).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from accelerate.state import AcceleratorState

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> ModuleType:
    """The script ``examples/<name>.py`` imported as a module (its ``main`` only runs when called)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def isolated_run():
    """Each test may set its own mixed precision: accelerate's process-wide state is reset after it. The
    scripts run with ``--threads 1`` (2 threads stall badly when another process takes a core);
    torch's thread count is restored."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)


def test_dpo_on_concise_pairs_shortens_answers(tmp_path):
    ratio = example("dpo_concise").main([
        "--train-prompts", "24", "--eval-prompts", "16", "--pair-tokens", "48", "--eval-tokens", "64",
        "--epochs", "3", "--lr", "5e-4", "--threads", "1", "--output-dir", str(tmp_path / "dpo"),
    ])
    assert ratio < 0.9


@pytest.mark.slow
def test_reward_model_orders_held_out_friendliness_pairs(tmp_path):
    accuracy = example("reward_model_friendliness").main([
        "--max-new-tokens", "24", "--threads", "1", "--pairs-cache", "", "--output-dir", str(tmp_path / "rm"),
    ])
    assert accuracy >= 0.8
