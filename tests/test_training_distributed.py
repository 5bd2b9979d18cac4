"""Two CPU processes under ``torchrun`` (gloo): the shared loop runs data-parallel and both ranks end with
identical weights (DESIGN.md: ``accelerate launch --cpu`` started only one process here; torchrun works)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = """
import sys
from safetensors.torch import save_file
from paretoalign.training.runner import config_for
from paretoalign.training.sft import SFTTrainer

config = config_for("sft", sys.argv[2:])
trainer = SFTTrainer(config, [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(8)])
trainer.train()
weights = {n: p.detach().contiguous() for n, p in trainer.unwrapped_model.named_parameters() if p.requires_grad}
save_file(weights, f"{sys.argv[1]}/rank{trainer.accelerator.process_index}.safetensors")
"""


def torchrun() -> list[str]:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def run_two_ranks(worker: str, tmp_path: Path, flags: list[str]) -> dict:
    """Run ``worker`` on 2 CPU ranks under torchrun; assert both ranks end with identical, trained weights and
    return the run's manifest."""
    script = tmp_path / "worker.py"
    script.write_text(worker)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [*torchrun(), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path),
               "--output-dir", str(out), "--device", "cpu", "--no-progress", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert any(torch.count_nonzero(t) for n, t in rank0.items() if "lora_B" in n), "the adapter never trained"
    return json.loads((out / "manifest.json").read_text())


def test_two_cpu_ranks_end_with_identical_weights(tiny_model_dir, tmp_path):
    manifest = run_two_ranks(WORKER, tmp_path, ["--model", str(tiny_model_dir), "--max-steps", "3",
                                                "--batch-size", "2", "--lr", "1e-2"])
    assert manifest["num_processes"] == 2 and manifest["steps"] == 3
    assert manifest["trained_tokens"] > 0


PPO_WORKER = """
import sys
from safetensors.torch import save_file
from paretoalign.training.runner import config_for
from paretoalign.training.rl.ppo import PPOTrainer

config = config_for("ppo", sys.argv[2:])
trainer = PPOTrainer(config, [{"prompt": f"Tell me about topic {i}."} for i in range(8)])
trainer.train()
weights = {n: p.detach().contiguous() for n, p in trainer.unwrapped_model.named_parameters() if p.requires_grad}
save_file(weights, f"{sys.argv[1]}/rank{trainer.accelerator.process_index}.safetensors")
"""


def test_ppo_on_two_cpu_ranks_ends_with_identical_weights(tiny_model_dir, tmp_path):
    """The RL loop under DDP: each rank makes its own experience, gradients are averaged, weights agree."""
    manifest = run_two_ranks(PPO_WORKER, tmp_path, [
        "--model", str(tiny_model_dir), "--objectives", "conciseness", "--batch-size", "2", "--minibatch-size", "2",
        "--max-new-tokens", "4", "--max-steps", "2", "--norm-prompts", "4", "--lr", "1e-2", "--lora-r", "4"])
    assert manifest["num_processes"] == 2 and manifest["steps"] == 2
