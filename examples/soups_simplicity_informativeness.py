"""Rewarded Soups on the embedded default model: one DPO adapter per objective, merged per preference.

On SmolLM2-135M-Instruct, all on CPU, offline:

1. ``get_recipe("soups").fit``: sample the base model on train-split ``instructions`` prompts (shared by
   both objectives), pair each prompt's best and worst sample by each objective, and train one LoRA adapter
   per objective with DPO (the ``quick`` preset; ``--preset full`` trains by PPO as the paper).
2. ``load``: the soup loads both adapters once and, on eval-split prompts, answers at the weights
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from paretoalign.core.preference import Preference  # noqa: E402
from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.generation import GenerationConfig, generate  # noqa: E402
from paretoalign.methods import get_recipe  # noqa: E402
from paretoalign.models import load_model  # noqa: E402
from paretoalign.objectives import load_objectives, score_all  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="simplicity,informativeness", help="exactly two objectives")
    parser.add_argument("--preset", choices=["quick", "full"], default="quick", help="the soups recipe's preset")
    parser.add_argument("--train-prompts", type=int, default=None, help="train prompts (overrides the preset)")
    parser.add_argument("--sample-tokens", type=int, default=None, help="tokens per base sample (overrides the preset)")
    parser.add_argument("--epochs", type=float, default=None, help="DPO epochs (overrides the preset)")
    parser.add_argument("--lr", type=float, default=None, help="DPO learning rate (overrides the preset)")
    parser.add_argument("--eval-prompts", type=int, default=32, help="eval-split prompts to measure on")
    parser.add_argument("--eval-tokens", type=int, default=64, help="max new tokens when measuring")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--out", "--output-dir", dest="out", default=None,
                        help="run directory (default: a temporary folder); a finished run with the same settings is reloaded")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    objectives = load_objectives(args.objectives)
    first, second = (objective.name for objective in objectives)
    workdir = Path(args.out or tempfile.mkdtemp(prefix="soups-")) / "soups"
    clock = time.perf_counter()
    overrides = {"prompts": args.train_prompts, "max_new_tokens": args.sample_tokens, "epochs": args.epochs,
                 "lr": args.lr}
    recipe = get_recipe("soups")
    config = recipe.config(args.preset, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    run = recipe.fit(objectives, workdir, config)
    trained = time.perf_counter()
    prompts = [record.prompt for record in load_prompts("instructions", "eval")[: args.eval_prompts]]
    config = GenerationConfig(max_new_tokens=args.eval_tokens, temperature=0.7, seed=args.seed + 1, batch_size=16)
    base_model, tokenizer = load_model(None)
    rows = {"base": score_all(objectives, prompts, [r.text for r in generate(base_model, tokenizer, prompts, config)])}
    soup = recipe.load(run.path)
    for weight in (1.0, 0.5, 0.0):
        preference = Preference.parse({first: weight, second: 1.0 - weight})
        rows[str(preference)] = score_all(objectives, prompts, [r.text for r in soup.generate(prompts, preference, config)])
    measured = time.perf_counter()
    compute = run.compute
    print(f"{'policy':<36} {first:>16} {second:>16}")
    for label, scores in rows.items():
        print(f"{label:<36} {np.mean(scores[first]):>16.2f} {np.mean(scores[second]):>16.2f}")
    for name, detail in run.manifest["policies"].items():
        print(f"{name}: {detail.get('pairs', '-')} pairs ({detail.get('tied_prompts', 0)} tied prompts), "
              f"{detail['steps']} steps")
    print(f"compute: {compute['generated_tokens']} generated + {compute['trained_tokens']} trained tokens; "
          f"time: training {trained - clock:.0f} s, measuring {measured - trained:.0f} s; run in {run.path}")
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
