"""Checkpoints: SIGKILL mid-run then --resume equals an uninterrupted run; NaN stops and keeps the last
good checkpoint; a changed config refuses to resume. Runs go through ``training.runner`` as the CLI does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paretoalign.core.errors import ConfigError, TrainingError
from paretoalign.training.base import TRAINER_STATE
from paretoalign.training.runner import run_training
from paretoalign.training.sft import SFTTrainer


ROWS = [{"prompt": f"Question {i}: what color is the sky?", "response": f"The sky is blue, {i}."} for i in range(10)]


def run_args(model_dir: Path, data: Path, out: Path, steps: int = 60, *extra: str) -> list[str]:
    return ["--model", str(model_dir), "--dataset", str(data), "--output-dir", str(out), "--max-steps", str(steps),
            "--batch-size", "4", "--grad-accum", "2", "--lr", "5e-3", "--lora-dropout", "0.1", "--save-every", "10",
            "--no-progress", *extra]


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def _subprocess(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "paretoalign.training.runner", "sft", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "adapter_model.safetensors")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model_dir, data_file, tmp_path):
    killed = tmp_path / "killed"
    process = _subprocess(run_args(tiny_model_dir, data_file, killed))
    checkpoints = killed / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir())):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model").exists(), "the run finished before it could be killed"

    resumed = _subprocess(run_args(tiny_model_dir, data_file, killed, 60, "--resume"))
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output

    straight = run_training("sft", run_args(tiny_model_dir, data_file, tmp_path / "straight"))
    expected, got = _adapter(straight.run_dir), _adapter(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))


class NaNAfter(SFTTrainer):
    """SFT whose loss turns NaN at micro-batch ``bad``: what a diverging run looks like to the loop."""

    bad = 5

    def compute_loss(self, batch):
        loss, metrics = super().compute_loss(batch)
        return (loss * float("nan") if self.state.micro_step >= self.bad else loss), metrics


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, data_file, tmp_path):
    from paretoalign.training.runner import config_for

    out = tmp_path / "nan"
    config = config_for("sft", run_args(tiny_model_dir, data_file, out, 20, "--save-every", "2"))
    with pytest.raises(TrainingError, match=r"loss became NaN/inf at step 3 .*checkpoint-00000002"):
        NaNAfter(config, ROWS).train()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-00000002"]
    state = json.loads((out / "checkpoints" / names[0] / TRAINER_STATE).read_text())
    assert state["step"] == 2 and state["micro_step"] == 4
    assert load_file(out / "checkpoints" / names[0] / "model.safetensors")


def test_resume_refuses_a_changed_config(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "run"
    run_training("sft", run_args(tiny_model_dir, data_file, out, 2, "--save-every", "2"))
    with pytest.raises(ConfigError, match="config field 'lr' changed"):
        run_training("sft", run_args(tiny_model_dir, data_file, out, 4, "--save-every", "2", "--resume", "--lr", "1"))
    longer = run_training("sft", run_args(tiny_model_dir, data_file, out, 4, "--save-every", "2", "--resume"))
    assert longer.steps == 4
    with pytest.raises(ConfigError, match="previous run"):
        run_training("sft", run_args(tiny_model_dir, data_file, out, 4))
