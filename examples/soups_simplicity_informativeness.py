"""Rewarded Soups on the embedded default model: one DPO adapter per objective, merged per preference.

On SmolLM2-135M-Instruct, all on CPU, offline:

1. ``train_objective_policies``: sample the base model on train-split ``instructions`` prompts (shared by
   both objectives), pair each prompt's best and worst sample by each objective, and train one LoRA adapter
   per objective with DPO (the ``--budget`` preset: ``quick`` or ``full``).
2. ``SoupPolicy``: load both adapters once and, on eval-split prompts, answer at the weights
   (1, 0), (0.5, 0.5) and (0, 1), merging the adapters' deltas in memory for each preference.
3. Print each objective's mean raw score per preference, next to the base model's.

Run: ``python examples/soups_simplicity_informativeness.py`` (see ``--help``). Ends with
``RESULT soups_<objective>_gain=<score at all weight on it - score at all weight on the other>`` per
objective; above 0 means the soup moves each objective the way its weight asks. Measured with the defaults
(``quick``: 32 prompts x 4 samples of 48 tokens, 16 DPO steps per objective) and ``--threads 1`` on the
shared, busy 2-core CPU, 32 eval prompts, 64 tokens (Flesch reading ease / words):

    base                                  52.9 / 52.4
    simplicity=1,informativeness=0        71.1 / 45.9
    simplicity=0.5,informativeness=0.5    58.6 / 50.8
    simplicity=0,informativeness=1        48.0 / 51.7

gains: simplicity 23.1, informativeness 5.8; 6127 generated + 23176 trained tokens; training 512 s.
The informativeness adapter mostly undoes simplicity: with 48-token samples many candidates are cut at
the same length, so its pairs carry less signal than the simplicity pairs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from paretoalign.core.preference import Preference  # noqa: E402
from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.generation import GenerationConfig, generate  # noqa: E402
from paretoalign.methods.soups import (  # noqa: E402
    SoupPolicy,
    read_compute,
    resolve_budget,
    train_objective_policies,
)
from paretoalign.models import load_model  # noqa: E402
from paretoalign.objectives import load_objectives, score_all  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="simplicity,informativeness", help="exactly two objectives")
    parser.add_argument("--budget", choices=["quick", "full"], default="quick", help="training budget preset")
    parser.add_argument("--train-prompts", type=int, default=None, help="train prompts (overrides the preset)")
    parser.add_argument("--sample-tokens", type=int, default=None, help="tokens per base sample (overrides the preset)")
    parser.add_argument("--epochs", type=float, default=None, help="DPO epochs (overrides the preset)")
    parser.add_argument("--eval-prompts", type=int, default=32, help="eval-split prompts to measure on")
    parser.add_argument("--eval-tokens", type=int, default=64, help="max new tokens when measuring")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--output-dir", default=None, help="folder for the adapters (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    objectives = load_objectives(args.objectives)
    first, second = (objective.name for objective in objectives)
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="soups-"))
    clock = time.perf_counter()
    overrides = {"prompts": args.train_prompts, "max_new_tokens": args.sample_tokens, "epochs": args.epochs}
    budget = replace(resolve_budget(args.budget), **{k: v for k, v in overrides.items() if v is not None})
    adapters = train_objective_policies(objectives, workdir, trainer="dpo", budget=budget, seed=args.seed)
    trained = time.perf_counter()
    prompts = [record.prompt for record in load_prompts("instructions", "eval")[: args.eval_prompts]]
    config = GenerationConfig(max_new_tokens=args.eval_tokens, temperature=0.7, seed=args.seed + 1, batch_size=16)
    base_model, tokenizer = load_model(None)
    rows = {"base": score_all(objectives, prompts, [r.text for r in generate(base_model, tokenizer, prompts, config)])}
    soup = SoupPolicy(base_model, tokenizer, adapters)
    for weight in (1.0, 0.5, 0.0):
        preference = Preference.parse({first: weight, second: 1.0 - weight})
        rows[str(preference)] = score_all(objectives, prompts, [r.text for r in soup.generate(prompts, preference, config)])
    measured = time.perf_counter()
    compute = read_compute(workdir)
    print(f"{'policy':<36} {first:>16} {second:>16}")
    for label, scores in rows.items():
        print(f"{label:<36} {np.mean(scores[first]):>16.2f} {np.mean(scores[second]):>16.2f}")
    for name, detail in compute["per_objective"].items():
        print(f"{name}: {detail['pairs']} pairs ({detail['tied_prompts']} tied prompts), {detail['steps']} steps")
    print(f"compute: {compute['generated_tokens']} generated + {compute['trained_tokens']} trained tokens; "
          f"time: training {trained - clock:.0f} s, measuring {measured - trained:.0f} s; adapters in {workdir}")
    at_first, at_second = rows[f"{first}=1,{second}=0"], rows[f"{first}=0,{second}=1"]
    gains = {}
    for name in (first, second):
        direction = next(o.direction for o in objectives if o.name == name)
        own, other = (at_first, at_second) if name == first else (at_second, at_first)
        gains[name] = float(direction * (np.mean(own[name]) - np.mean(other[name])))
        print(f"RESULT soups_{name}_gain={gains[name]:.3f}")
    return gains


if __name__ == "__main__":
    main()
