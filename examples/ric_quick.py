"""RiC on the embedded default model: one LoRA model steered by reward targets in its prompt.

On SmolLM2-135M-Instruct, CPU, offline:

1. Fit each objective's normalization on the base model's answers to train-split prompts (what the demo does).
2. Fit the ``ric`` recipe at the chosen preset: sample the base model on train prompts (plain and with one
   objective's instruction appended), score, write the conditioned data, LoRA SFT, online iterations (see
   ``paretoalign/methods/ric/stages.py``; ``quick`` = 32 prompts × 4 responses of 64 tokens, 12 steps of 8, no
   online iteration), then load the run's policy.
3. On eval-split prompts, answer at a few preferences with the same seeds and report the mean normalized
   reward of each objective, next to the base model.

Run: ``python examples/ric_quick.py`` (see ``--help``). Ends with ``RESULT ric_<objective>_gap=<reward at
that objective's corner minus at the other corner>`` (> 0: the preference steers that objective) and
``RESULT ric_train_seconds=<wall time of step 2>``.

Measured with an earlier quick preset (144 responses of 40 tokens, 64 steps; 24 eval prompts, ``--threads 1``,
busy shared CPU): informativeness gap +0.30, simplicity gap -0.26, 573 s of training. At 40 tokens most answers
are cut at the cap, so word count (informativeness) mostly tells short answers apart; the quick preset learns that
(short answers when informativeness is not wanted) but not yet the readability targets.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from paretoalign.core.preference import Preference  # noqa: E402
from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.evaluation import fit_reference_normalization  # noqa: E402
from paretoalign.generation import BasePolicy, GenerationConfig  # noqa: E402
from paretoalign.methods import get_recipe  # noqa: E402
from paretoalign.models import load_model  # noqa: E402
from paretoalign.objectives import load_objectives, reward_all  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="simplicity,informativeness", help="two objectives")
    parser.add_argument("--preset", default="quick", choices=["quick", "full"], help="RiC settings preset")
    parser.add_argument("--fit-prompts", type=int, default=24, help="train prompts to fit normalization on")
    parser.add_argument("--eval-prompts", type=int, default=24, help="eval-split prompts to measure on")
    parser.add_argument("--eval-tokens", type=int, default=40, help="max new tokens when measuring")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--output-dir", default=None, help="run directory; a second call reloads the finished run "
                        "(default: a temporary folder)")
    return parser.parse_args(argv)


def mean_rewards(policy, objectives, prompts, preference, config) -> dict[str, float]:
    responses = policy.generate(prompts, preference, config)
    rewards = reward_all(objectives, prompts, [r.text for r in responses])
    return {name: float(np.mean(values)) for name, values in rewards.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    objectives = load_objectives(args.objectives)
    names = [o.name for o in objectives]
    if len(names) != 2:
        raise SystemExit("give exactly two objectives, e.g. simplicity,informativeness")
    config = GenerationConfig(max_new_tokens=args.eval_tokens, seed=args.seed)
    base = BasePolicy(*load_model(None, dtype="float32"))
    fit_prompts = [r.prompt for r in load_prompts("instructions", "train")[: args.fit_prompts]]
    fit_reference_normalization(objectives, base, fit_prompts, config)
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="ric-"))
    started = time.perf_counter()
    recipe = get_recipe("ric")
    run = recipe.fit(objectives, workdir, recipe.config(args.preset, seed=args.seed), log=print)
    train_seconds = time.perf_counter() - started
    policy = recipe.load(run.path, dtype="float32")
    prompts = [r.prompt for r in load_prompts("instructions", "eval")[: args.eval_prompts]]
    corners = [Preference.parse({names[0]: 1.0, names[1]: 0.0}), Preference.parse({names[0]: 0.5, names[1]: 0.5}),
               Preference.parse({names[0]: 0.0, names[1]: 1.0})]
    rows = {"base": mean_rewards(base, objectives, prompts, None, config)}
    rows.update({f"ric {p}": mean_rewards(policy, objectives, prompts, p, config) for p in corners})
    print(f"\nmean normalized reward on {len(prompts)} eval prompts ({args.eval_tokens} tokens); run in {workdir}")
    print(f"{'policy':<42}" + "".join(f"{name:>16}" for name in names))
    for label, values in rows.items():
        print(f"{label:<42}" + "".join(f"{values[name]:>16.3f}" for name in names))
    first, last = rows[f"ric {corners[0]}"], rows[f"ric {corners[-1]}"]
    results = {f"ric_{names[0]}_gap": first[names[0]] - last[names[0]],
               f"ric_{names[1]}_gap": last[names[1]] - first[names[1]],
               "ric_train_seconds": train_seconds}
    print(f"training cost: {policy.training_cost}")
    for key, value in results.items():
        print(f"RESULT {key}={value:.3f}")
    return results


if __name__ == "__main__":
    main()
