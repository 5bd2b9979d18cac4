"""``paretoalign soups``: Rewarded Soups from the command line.

``paretoalign soups train --objectives a,b --out DIR`` trains one LoRA adapter per objective into a run
directory (manifest, adapters, compute accounting); ``paretoalign soups generate DIR --preference a=0.3,b=0.7
--prompt TEXT`` merges them in memory for that preference and answers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from ..core.errors import ConfigError
from .cli import add_generation_flags, generation_config_from_args

BUDGET_FLAGS = {"train_prompts": "prompts", "samples": "samples", "max_new_tokens": "max_new_tokens",
                "epochs": "epochs", "lr": "lr"}
"""Flag -> :class:`~paretoalign.methods.soups.SoupsBudget` field it overrides."""


def build_parser() -> argparse.ArgumentParser:
    """The ``soups`` sub-program's parser with its ``train`` and ``generate`` commands."""
    parser = argparse.ArgumentParser(
        prog="paretoalign soups",
        description="Rewarded Soups: one policy per objective, merged in memory per preference.",
        epilog="Run 'paretoalign soups COMMAND --help' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_parser(commands)
    _add_generate_parser(commands)
    return parser


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train one LoRA adapter per objective into a run directory",
        description="Train one LoRA adapter per objective: PPO on the objective's normalized reward (default), or "
        "DPO on each prompt's best-vs-worst base-model samples by that objective (--trainer dpo). Writes "
        "manifest.json, policies/<objective>/model and compute.json.",
    )
    p.add_argument("--objectives", required=True, help="comma-separated objectives, e.g. simplicity,informativeness")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--trainer", choices=["ppo", "dpo"], default="ppo",
                   help="single-objective trainer: ppo on the objective's reward (the paper's), or dpo on "
                   "objective-labelled pairs (much cheaper on a CPU) (default %(default)s)")
    p.add_argument("--budget", choices=["quick", "full"], default="quick",
                   help="quick: a few CPU minutes on the default model; full: six times the data (default %(default)s)")
    p.add_argument("--model", default=None, help="base model: hub id, folder or .gguf (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    group = p.add_argument_group("budget overrides")
    group.add_argument("--train-prompts", type=int, default=None, help="train prompts to sample pairs from")
    group.add_argument("--samples", type=int, default=None, help="base-model samples per prompt (>= 2)")
    group.add_argument("--max-new-tokens", type=int, default=None, help="tokens per sampled response")
    group.add_argument("--epochs", type=float, default=None, help="DPO passes over the pairs")
    group.add_argument("--lr", type=float, default=None, help="DPO learning rate of the LoRA adapters")
    p.set_defaults(func=cmd_train)


def _add_generate_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "generate", help="answer prompts with the soup merged for one preference",
        description="Load the run's adapters once onto the base model, merge them with the preference's weights "
        "and answer each --prompt.",
    )
    p.add_argument("run_dir", help="run directory written by 'paretoalign soups train'")
    p.add_argument("--preference", required=True, help="weights over the run's objectives, e.g. simplicity=0.3,informativeness=0.7")
    p.add_argument("--normalize-weights", action="store_true", help="rescale the weights to sum to 1")
    p.add_argument("--prompt", action="append", required=True, help="a user message to answer (repeat for several)")
    p.add_argument("--mode", choices=["delta", "average_ab"], default="delta",
                   help="delta: W0 + sum w_k dW_k, the interpolation; average_ab: average A and B separately (default %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")
    add_generation_flags(p, max_new_tokens=128)
    p.set_defaults(func=cmd_generate)


def _budget(args: argparse.Namespace):
    from ..methods.soups import resolve_budget

    overrides = {field: getattr(args, flag) for flag, field in BUDGET_FLAGS.items() if getattr(args, flag) is not None}
    for flag, field in BUDGET_FLAGS.items():
        if field in overrides and overrides[field] <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be > 0, got {overrides[field]}")
    return replace(resolve_budget(args.budget), **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Train the per-objective adapters and record them in the run directory's manifest."""
    from ..core.rundir import RunDirectory
    from ..methods.soups import COMPUTE_FILE, METHOD_NAME, check_trainer, read_compute, train_objective_policies
    from ..models import resolve_model_spec
    from ..objectives import load_objectives

    objectives = load_objectives(args.objectives)
    budget = _budget(args)
    check_trainer(args.trainer)
    run = RunDirectory.create(
        args.out, method=METHOD_NAME, overwrite=args.overwrite, objectives=[o.name for o in objectives],
        trainer=args.trainer, budget=asdict(budget), base_model=resolve_model_spec(args.model), seed=args.seed,
    )
    train_objective_policies(objectives, run.path, trainer=args.trainer, model=args.model, budget=budget, seed=args.seed)
    compute = read_compute(run.path)
    run.manifest["adapters"] = compute["adapters"]
    run.manifest["training_cost"] = {key: compute[key] for key in ("generated_tokens", "trained_tokens", "wall_time_s")}
    for name, relative in run.manifest["adapters"].items():
        run.manifest["artifacts"][f"adapter:{name}"] = {"path": relative, "kind": "adapter", "objective": name}
    run.add_artifact("compute", COMPUTE_FILE)
    for name, relative in run.manifest["adapters"].items():
        print(f"{name}: {run.path / relative}")
    cost = run.manifest["training_cost"]
    print(f"generated {cost['generated_tokens']} tokens, trained on {cost['trained_tokens']} tokens "
          f"in {cost['wall_time_s']:.0f} s; run: {run.path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Merge the run's adapters for ``--preference`` and print one answer per prompt."""
    from ..core.preference import Preference
    from ..core.rundir import RunDirectory
    from ..methods.soups import METHOD_NAME, SoupPolicy
    from ..models import load_model

    run = RunDirectory.open(args.run_dir)
    if run.manifest.get("method") != METHOD_NAME or "adapters" not in run.manifest:
        raise ConfigError(f"{args.run_dir!r} is not a finished soups run (method {run.manifest.get('method')!r}); "
                          "give a directory written by 'paretoalign soups train'")
    adapters = {name: Path(run.path) / relative for name, relative in run.manifest["adapters"].items()}
    preference = Preference.parse(args.preference, known=adapters, normalize=args.normalize_weights)
    config = generation_config_from_args(args)
    model, tokenizer = load_model(run.manifest["base_model"], dtype=args.dtype, device=args.device)
    policy = SoupPolicy(model, tokenizer, adapters, mode=args.mode)
    responses = policy.generate(args.prompt, preference, config)
    print("\n\n".join(response.text for response in responses))
    return 0


def main(argv: Sequence[str]) -> int:
    """Parse ``paretoalign soups ...`` and run the command; user errors raise ParetoAlignError."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)
