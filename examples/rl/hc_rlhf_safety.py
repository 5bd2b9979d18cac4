"""HC-RLHF's safety test passes a run that meets its cost constraint and says "no solution found" for one that cannot.

On the embedded default model (SmolLM2-135M-Instruct), all on CPU, offline. Two short ``reinforce-lag``
runs with the same data, reward and seed, differing only in the threshold τ of the constraint:

- reward ``relevance`` (MiniLM similarity of answer and prompt), cost ``length_cost?budget=20`` (words
  beyond 20; answers are cut at ``--max-new-tokens`` tokens, so the cost is bounded);
- a *loose* run with τ = ``--loose-threshold`` (default 25 words over budget), which the model meets:
  its answers run to the 48-token cut (about 37 words, cost about 17);
- a *strict* run with τ = 0 (no answer may run past 20 words), which a few steps of training cannot
  make the model meet with confidence 1 − δ. (A first try with τ = 15 also failed: held-out mean cost
  17.3, UCB 18.8 > 15, so "loose" has to be above what the model actually does.)

Each run holds ``--safety-prompts`` train prompts out, trains ``--steps`` REINFORCE-RLOO iterations
(``--prompts-per-step`` prompts × K samples), then answers the held-out prompts once each and computes
UCB = mean(cost) + t_{1-δ,n-1}·std/√n. The table shows λ's path (it rises while μ̂ + kσ̂ > τ and falls
otherwise), the held-out mean cost, the UCB and the verdict, and where the adapter went (``model`` or
``model-unsafe``).

Run: ``python examples/rl/hc_rlhf_safety.py`` (see ``--help``). Ends with two lines
``RESULT hc_rlhf_<run>_ucb_minus_threshold=<UCB − τ>``: negative means the test passed.
Measured with the defaults and ``--threads 1`` on the shared, busy 2-core CPU (9 minutes in all):

    threshold τ (words over budget)  25                        0
    λ per step (then final)          1.00 0.47 0.34 0.29 0.24  1.00 5.00 5.00 5.00 5.00
    batch mean cost per step         13.9 17.1 18.5 16.6       13.9 17.1 19.6 17.8
    held-out mean / std cost         16.33 / 6.29              16.46 / 5.20
    held-out n, UCB                  24, 18.03                 24, 17.86
    verdict                          pass                      no solution found
    adapter saved as                 model                     model-unsafe
    RESULT hc_rlhf_loose_ucb_minus_threshold=-6.971
    RESULT hc_rlhf_strict_ucb_minus_threshold=17.859

Four iterations do not shorten the answers (every rollout hits the 48-token cut); λ falls under the
loose bound and hits λ_max = 5 under the strict one within one step.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.objectives import load_objectives  # noqa: E402
from paretoalign.training.rl.reinforce import ReinforceLagConfig  # noqa: E402
from paretoalign.training.runner import run_training  # noqa: E402

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-prompts", type=int, default=64, help="train-split prompts (held-out ones included)")
    parser.add_argument("--safety-prompts", type=int, default=24, help="prompts held out for the safety test")
    parser.add_argument("--steps", type=int, default=4, help="REINFORCE iterations per run")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="prompts per iteration")
    parser.add_argument("--samples-per-prompt", type=int, default=4, help="K rollouts per prompt (RLOO groups)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per response at most")
    parser.add_argument("--budget", type=int, default=20, help="words a response may have before it costs")
    parser.add_argument("--loose-threshold", type=float, default=25.0, help="τ of the run that should pass")
    parser.add_argument("--delta", type=float, default=0.1, help="δ of the safety test")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the LoRA adapter")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--output-dir", default=None, help="folder for both runs (default: a temporary folder)")
    return parser.parse_args(argv)


def run(name: str, threshold: float, args: argparse.Namespace, prompts: list[dict], objectives: list,
        output_dir: Path) -> dict:
    """One reinforce-lag run; returns what the table shows."""
    config = ReinforceLagConfig(
        objectives="relevance", cost_objective=f"length_cost?budget={args.budget}", threshold=threshold,
        delta=args.delta, safety_prompts=args.safety_prompts, batch_size=args.prompts_per_step,
        samples_per_prompt=args.samples_per_prompt, minibatch_size=4, max_new_tokens=args.max_new_tokens,
        max_steps=args.steps, norm_prompts=8, lr=args.lr, seed=args.seed, output_dir=str(output_dir / name),
        overwrite=True, progress=False,
    )
    started = time.perf_counter()
    result = run_training("reinforce-lag", config, train_data=prompts, objectives=objectives)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
    lambdas = [line["lambda"] for line in lines if "lambda" in line] + [manifest["lambda"]]
    return {"name": name, "threshold": threshold, "safety": result.safety, "lambdas": lambdas,
            "train_cost": [line["cost/length_cost"] for line in lines if "lambda" in line],
            "model": result.model_dir.name, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="hc-rlhf-"))
    prompts = [{"prompt": r.prompt} for r in load_prompts("instructions", "train")[: args.train_prompts]]
    objectives = load_objectives("relevance")  # loaded once; normalization is fitted by the first run
    runs = [run("loose", args.loose_threshold, args, prompts, objectives, output_dir),
            run("strict", 0.0, args, prompts, objectives, output_dir)]
    rows = [("", *[r["name"] for r in runs]),
            ("threshold τ (words over budget)", *[f"{r['threshold']:g}" for r in runs]),
            ("λ per step (then final)", *[" ".join(f"{x:.2f}" for x in r["lambdas"]) for r in runs]),
            ("batch mean cost per step", *[" ".join(f"{x:.1f}" for x in r["train_cost"]) for r in runs]),
            ("held-out mean / std cost", *[f"{r['safety'].mean:.2f} / {r['safety'].std:.2f}" for r in runs]),
            ("held-out n, UCB", *[f"{r['safety'].n}, {r['safety'].ucb:.2f}" for r in runs]),
            ("verdict", *[r["safety"].verdict for r in runs]),
            ("adapter saved as", *[r["model"] for r in runs]),
            ("time (s)", *[f"{r['seconds']:.0f}" for r in runs])]
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)))
    print(f"run directories: {output_dir}")
    margins = {r["name"]: r["safety"].ucb - r["threshold"] for r in runs}
    for name, margin in margins.items():
        print(f"RESULT hc_rlhf_{name}_ucb_minus_threshold={margin:.3f}")
    return margins


if __name__ == "__main__":
    main()
