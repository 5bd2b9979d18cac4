"""PPO-Lagrangian keeps the default model's answers within a length budget while it maximizes relevance.

On the embedded default model (SmolLM2-135M-Instruct), on CPU, offline:

1. ``run_training("ppo-lag", ...)``: maximize the normalized ``relevance`` reward subject to mean
   ``length_cost?budget=B`` (words beyond B) <= D, with D chosen so the base model violates it. λ starts
   at 1, moves by SGD on −(J_c − d)·λ against the windowed mean episode cost J_c, and weighs the cost
   advantage in (A_r − λ·A_c)/(1 + λ). ``lambda_cost.png`` in the run directory plots λ and J_c.
2. On eval-split prompts, sample with the base and with the trained policy (same seeds) and compare
   the mean cost with the threshold.

Run: ``python examples/rl/ppo_lag_length.py`` (see ``--help``). Ends with
``RESULT lag_eval_cost=<mean cost of the trained policy> lag_threshold=<D> lag_base_cost=<base's>
lambda_peak_step=<step of the largest λ> lambda_final=<last λ>``.

Measured with the defaults and ``--threads 1`` on the shared, busy 2-core CPU (12 minutes of training:
about 20 s per iteration when the machine was quiet, 100 s under load). J_c per step: 27.4 26.4 26.2
21.6 17.0 19.5 18.1 11.9 5.8 3.9 8.1 9.8 5.0 2.7; λ went from 1 to the cap 5 at the first step (the
violation of ~23 words is large), left the cap at step 10 when J_c first fell below d = 4 (4.85), returned
while J_c was above d again (steps 11-13) and fell to 2.59 at step 14 (J_c 2.7). On 24 eval prompts the
base's mean cost is 25.75 (37.8 words) and the PPO-Lag policy's 0.00 (4.1 words: it overshoots, and
relevance fell from 0.64 to 0.11), KL 17.4 nats per answer.
``RESULT lag_eval_cost=0.000 lag_threshold=4 lag_base_cost=25.750 lambda_peak_step=1 lambda_final=2.594``
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from paretoalign.training import run_training  # noqa: E402
from paretoalign.training.rl.lagrangian import LAMBDA_PLOT, PPOLagConfig  # noqa: E402
from rl_common import add_run_arguments, measure_on_eval_prompts, print_rows, run_settings  # noqa: E402


STEPS = 14


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=12, help="words allowed before length_cost counts")
    parser.add_argument("--threshold", type=float, default=4.0, help="D: bound on the mean length_cost")
    parser.add_argument("--cost-window", type=int, default=16, help="episodes in J_c's sliding window")
    add_run_arguments(parser, steps=STEPS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    settings = run_settings(args, "ppo-lag-length-")
    clock = time.perf_counter()
    cost_spec = f"length_cost?budget={args.budget}"
    config = PPOLagConfig(objectives="relevance", cost_objective=cost_spec, threshold=args.threshold,
                          cost_window=args.cost_window, **settings)
    result = run_training("ppo-lag", config)
    trained = time.perf_counter()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    lambdas = [row["lambda"] for row in rows]
    peak = int(np.argmax(lambdas))
    comparison = measure_on_eval_prompts(result.model_dir, args)
    base_cost = np.maximum(comparison.words("base") - args.budget, 0)
    tuned_cost = np.maximum(comparison.words("tuned") - args.budget, 0)
    print_rows([
        ("constraint", f"mean {cost_spec} <= {args.threshold:g}"),
        ("PPO iterations x prompts", f"{result.steps} x {args.prompts_per_step}"),
        ("step: J_c / λ / relevance",
         "  ".join(f"{row['step']}:{row['J_c']:.1f}/{row['lambda']:.2f}/{row['reward/relevance']:.2f}" for row in rows)),
        ("λ peak (step)", f"{lambdas[peak]:.2f} ({rows[peak]['step']})"),
        (f"eval prompts, max {args.new_tokens} new tokens", f"{len(tuned_cost)}"),
        ("base mean cost / words", f"{base_cost.mean():.2f} / {comparison.words('base').mean():.1f}"),
        ("PPO-Lag mean cost / words", f"{tuned_cost.mean():.2f} / {comparison.words('tuned').mean():.1f}"),
        ("PPO-Lag KL to base: mean", f"{comparison.kl.mean():.2f}"),
        ("time: training / measuring (s)", f"{trained - clock:.0f} / {time.perf_counter() - trained:.0f}"),
        ("λ and J_c plot", str(result.run_dir / LAMBDA_PLOT)),
    ])
    print(f"RESULT lag_eval_cost={tuned_cost.mean():.3f} lag_threshold={args.threshold:g} "
          f"lag_base_cost={base_cost.mean():.3f} lambda_peak_step={rows[peak]['step']} lambda_final={lambdas[-1]:.3f}")
    return float(tuned_cost.mean())


if __name__ == "__main__":
    main()
