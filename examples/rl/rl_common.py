"""Shared by the RL examples: sample eval prompts with the base model and with a trained LoRA adapter
(same seeds), and measure each answer's words and KL to the base (METHODS.md's definition)."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paretoalign.data import load_prompts
from paretoalign.generation import GenerationConfig, Response, generate, kl_to_reference
from paretoalign.models import load_adapter, load_model, reference_mode
from paretoalign.objectives import count_words


@dataclass
class Comparison:
    """Base and tuned answers to the same prompts, and the tuned answers' KL to the base."""

    base: list[Response]
    tuned: list[Response]
    kl: np.ndarray

    def words(self, which: str) -> np.ndarray:
        return np.asarray([count_words(r.text) for r in getattr(self, which)], dtype=np.float64)


def compare_with_base(adapter_dir: Path, prompts: list[str], config: GenerationConfig) -> Comparison:
    """Answers of the base and of base + adapter to ``prompts`` and the adapter's KL to the base per answer."""
    model, tokenizer = load_model(None, dtype="bfloat16", device="cpu")
    base = generate(model, tokenizer, prompts, config)
    policy = load_adapter(model, adapter_dir)
    tuned = generate(policy, tokenizer, prompts, config)
    with reference_mode(policy):
        kl = kl_to_reference(tuned, policy, tokenizer)
    return Comparison(base, tuned, kl)


def add_run_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The flags every RL example shares: schedule, sizes, threads, seed, run directory."""
    parser.add_argument("--steps", type=int, default=steps, help="PPO iterations")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48, help="max new tokens of rollouts and eval answers")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval-prompts", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="run directory (default: a temporary folder)")


def run_settings(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Set the CPU threads; the PPO config fields the examples share, with the run directory."""
    torch.set_num_threads(args.threads)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix=prefix)
    return dict(output_dir=str(output_dir), overwrite=True, max_steps=args.steps, batch_size=args.prompts_per_step,
                minibatch_size=4, ppo_epochs=2, max_new_tokens=args.new_tokens, lr=args.lr, norm_prompts=16,
                mixed_precision="bf16", seed=args.seed, progress=False)


def measure_on_eval_prompts(adapter_dir: Path, args: argparse.Namespace) -> Comparison:
    """:func:`compare_with_base` on the first eval-split prompts, sampled at temperature 1 (exact KL)."""
    prompts = [r.prompt for r in load_prompts("instructions", "eval")][: args.eval_prompts]
    sampling = GenerationConfig(max_new_tokens=args.new_tokens, temperature=1.0, seed=args.seed + 1, batch_size=24)
    return compare_with_base(adapter_dir, prompts, sampling)


def print_rows(rows: list[tuple[str, str]]) -> None:
    """A two-column table."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
