"""SIPO on the embedded default model: its stage counts, and its front beside MOD over its first-round policies.

On SmolLM2-135M-Instruct, CPU, offline:

1. ``get_recipe("sipo").fit`` at the chosen preset (a finished run in ``--output-dir`` is reloaded, never
   retrained): DPO one LoRA policy per objective on the base model's scored samples, conflicting prompts, MOD
   samples at weights 0.2/0.4/0.6/0.8, reviews, rewrites, combine, filter, DPO + NLL re-alignment.
2. Print what survived each stage (``run.manifest["survivors"]``) and the re-alignment's pairs and steps.
3. Fit the objectives' normalization on the base model's answers to train prompts and sweep, as ``paretoalign
   demo`` does (its ``quick`` preset: eval prompts, 11-point grid, 40 tokens, T 0.7), the base model, SIPO's
   policy (MOD over the re-aligned policies) and MOD over the same run's first-round policies; print HV, MIP,
   steerability and the cut-off share, and draw both fronts (``--plot``).

Run: ``python examples/sipo_quick.py`` (see ``--help``). Ends with ``RESULT sipo_hv=..``, ``RESULT mod_hv=..``,
``RESULT sipo_steer=..``, ``RESULT mod_steer=..`` (the least steerable objective's Spearman correlation), the
``sipo_cut_off`` / ``mod_cut_off`` shares and ``RESULT sipo_train_seconds=..`` (the run's recorded fit time).

Measured with the defaults and ``--threads 1`` on the shared 2-core CPU (``quick``: 32 prompts x 4 samples of 48
tokens, 16 DPO steps per objective; 6 conflicting prompts; sweep of 10 eval prompts x 11 points x 40 tokens),
36.8 min in all (fit 1391 s, sweep the rest). 80 conflicting pairs on 32 prompts, 6 used; 24 MOD samples, 24
reviews, 24 rewrites, 4 rewrites kept by combine, 3 prompts kept by filter (all three MOD samples, none a
rewrite), 6 re-alignment pairs, 4 DPO + NLL steps per objective:

    method        HV     MIP    steer  cut
    base         0.214  -0.393    -   100%
    sipo         1.925   0.185  0.82   95%
    mod (first)  1.694   0.087  0.27  100%

One seed, 10 prompts with one sample each, and a re-alignment of 4 steps on 6 pairs: whether the gap between the
two fronts is more than sampling noise was not measured; read it as "SIPO runs end to end", not as the paper's gain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.evaluation import build_results, evaluate, fit_reference_normalization, plot_front  # noqa: E402
from paretoalign.evaluation import weight_grid  # noqa: E402
from paretoalign.evaluation.campaign import PRESETS, generation_config, summary_table  # noqa: E402
from paretoalign.generation import BasePolicy  # noqa: E402
from paretoalign.methods import DEFAULT_OBJECTIVES, get_recipe  # noqa: E402
from paretoalign.methods.sipo.stages import REALIGNED, SURVIVORS, first_round_policy  # noqa: E402
from paretoalign.models import load_model  # noqa: E402
from paretoalign.objectives import load_objectives  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help="two or more objectives")
    parser.add_argument("--preset", default="quick", choices=["quick", "full"], help="SIPO and sweep preset")
    parser.add_argument("--train-prompts", type=int, default=None, help="first-round prompts (overrides the preset)")
    parser.add_argument("--conflict-prompts", type=int, default=None, help="conflicting prompts used (overrides)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="eval-split prompts (default: the preset's)")
    parser.add_argument("--points", type=int, default=None, help="grid points per axis (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--output-dir", default=None, help="run directory; a second call reloads the finished run "
                        "(default: a temporary folder)")
    parser.add_argument("--plot", default=None, help="where to write the fronts figure (default: in the run)")
    return parser.parse_args(argv)


def stage_counts(run) -> dict[str, int]:
    """What survived each stage, and the re-alignment's pairs and optimizer steps per objective."""
    counts = dict(run.manifest[SURVIVORS])
    counts.update({f"realign_steps[{name}]": entry["steps"] for name, entry in run.manifest[REALIGNED].items()})
    return counts


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    objectives = load_objectives(args.objectives)
    names = [o.name for o in objectives]
    preset = PRESETS[args.preset]
    preset = replace(preset, eval_prompts=args.eval_prompts or preset.eval_prompts,
                     points_per_axis=args.points or preset.points_per_axis)
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="sipo-")) / "sipo"
    recipe = get_recipe("sipo")
    overrides = {"prompts": args.train_prompts, "conflict_prompts": args.conflict_prompts}
    config = recipe.config(preset.budget, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()
    run = recipe.fit(objectives, workdir, config, log=print)
    print(f"\nfit: {time.perf_counter() - started:.0f} s this call, {run.compute['wall_time_s']:.0f} s recorded; "
          f"stage counts (run in {run.path}):")
    for key, value in stage_counts(run).items():
        print(f"  {key:<32} {value}")

    model, tokenizer = load_model(None)
    fit_prompts = [r.prompt for r in load_prompts("instructions", "train")[: preset.fit_prompts]]
    fit_reference_normalization(objectives, BasePolicy(model, tokenizer), fit_prompts,
                                generation_config(preset, args.seed + 1000))
    prompts = [r.prompt for r in load_prompts("instructions", "eval")[: preset.eval_prompts]]
    grid = weight_grid(names, preset.points_per_axis)
    sipo = recipe.load(run.path)
    first = first_round_policy(run, names, recipe.settings(run))
    first.name = "mod first round"
    first.training_cost = {key: run.manifest["stages"]["first_align"].get(key, 0)
                           for key in ("generated_tokens", "trained_tokens", "wall_time_s")}
    sweeps = [evaluate(policy, objectives, prompts, grid, preset.samples_per_prompt,
                       generation_config(preset, args.seed)) for policy in (BasePolicy(model, tokenizer), sipo, first)]
    results = build_results(sweeps, prompts=len(prompts), preset=asdict(preset), base_model="embedded")
    plot = plot_front(results, args.plot or run.path / "sipo_vs_mod.png")
    print(f"\n{len(prompts)} eval prompts, {len(grid)} grid points, {preset.max_new_tokens} tokens; fronts in {plot}")
    print(summary_table(results))
    measured = results["methods"]
    out = {"sipo_hv": measured["sipo"]["hypervolume"], "mod_hv": measured["mod first round"]["hypervolume"],
           "sipo_steer": measured["sipo"]["min_steerability"] or 0.0,
           "mod_steer": measured["mod first round"]["min_steerability"] or 0.0,
           "sipo_cut_off": measured["sipo"]["cut_off"], "mod_cut_off": measured["mod first round"]["cut_off"],
           "sipo_train_seconds": run.compute["wall_time_s"]}
    for key, value in out.items():
        print(f"RESULT {key}={value:.3f}")
    return out


if __name__ == "__main__":
    main()
