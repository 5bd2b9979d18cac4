"""Rewarded Soups on the embedded default model, reduced to a few minutes (the example runs the quick budget):
after training one DPO adapter per objective, all weight on simplicity reads simpler than all weight on
informativeness."""

from __future__ import annotations

import pytest
from test_integration_training import example, isolated_run  # noqa: F401  (the fixture restores threads/accelerate)

pytestmark = pytest.mark.integration


def test_all_weight_on_simplicity_reads_simpler_than_all_weight_on_informativeness(tmp_path):
    gains = example("soups_simplicity_informativeness").main([
        "--train-prompts", "12", "--sample-tokens", "32", "--epochs", "3", "--lr", "5e-4", "--eval-prompts", "8",
        "--eval-tokens", "48", "--threads", "1", "--output-dir", str(tmp_path),
    ])
    assert gains["simplicity"] > 0
