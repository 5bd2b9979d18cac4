"""RiC on the embedded default model: the quick preset steers answer length by the targets in the prompt.

Runs ``examples/ric_quick.py`` (normalization on base answers, ``fit`` at the quick preset, ``load``, answers
on eval prompts at the two corner preferences). Several minutes on the 2-core CPU.
"""

from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState
from test_integration_training import example

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_ric_run_steers_towards_the_preferred_objective(tmp_path):
    threads = torch.get_num_threads()
    try:
        results = example("ric_quick").main(["--threads", "1", "--output-dir", str(tmp_path / "ric")])
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
    # informativeness=1 answers carry more words than simplicity=1 answers (measured +0.30 with 24 prompts).
    # The simplicity gap is not asserted: the quick preset does not steer readability yet (measured -0.26).
    assert results["ric_informativeness_gap"] > 0.1
