"""``paretoalign ric prepare|train|online|run``: the Rewards-in-Context recipe from the command line.

Every setting is a field of :class:`~paretoalign.methods.ric.RiCConfig`; each sub-command takes the flags of
its stage, ``prepare`` and ``run`` start from a ``--budget`` preset, and the effective settings are kept in
the run's ``manifest.json`` so later stages continue with them.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ..core.errors import ConfigError
from ..methods.ric.recipe import BUDGETS, RiCConfig

STAGE_HELP = {
    "prepare": "score the offline data, fit normalization and the target range, start a run directory",
    "train": "offline stage: LoRA SFT with each response's rewards written into its prompt",
    "online": "online iterations: frontier targets, generate, relabel, MORS, SFT on kept + online data",
    "run": "prepare, train and (with --iterations) online in one go",
}
STAGE_FIELDS = {
    "prepare": ("prepare", "train", "online", "all"),  # the run keeps them; later stages may override
    "train": ("train", "all"),
    "online": ("online", "all"),
    "run": ("prepare", "train", "online", "all"),
}


def _flag_type(annotation: Any) -> tuple[type, bool]:
    """(argparse type, is a list) of a config field's annotation."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return (options[0] if options else annotation), False


def add_stage_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One optional flag per RiCConfig field the command's stages read; only typed flags override."""
    hints = typing.get_type_hints(RiCConfig)
    group = parser.add_argument_group("settings (defaults: the budget preset, or the run's manifest)")
    for item in fields(RiCConfig):
        if item.metadata["stage"] not in STAGE_FIELDS[command]:
            continue
        kind, is_list = _flag_type(hints[item.name])
        flag = "--" + item.name.replace("_", "-")
        options: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS, "help": item.metadata["help"]}
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            group.add_argument(flag, type=kind, nargs="+" if is_list else None, metavar=item.name.upper(), **options)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    names = {item.name for item in fields(RiCConfig)}
    return {key: value for key, value in vars(args).items() if key in names}


def add_command(commands, command: str) -> None:
    """The sub-parser of one stage: its own arguments, then the settings its stages read."""
    sub = commands.add_parser(command, help=STAGE_HELP[command], description=STAGE_HELP[command])
    if command in ("prepare", "run"):
        sub.add_argument("--objectives", required=True, help="comma-separated objectives, e.g. simplicity,relevance")
        sub.add_argument("--out", required=True, help="run directory to create")
        sub.add_argument("--budget", choices=list(BUDGETS), default=None, help="CPU-sized preset of every setting")
        sub.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    else:
        sub.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by 'ric prepare'")
    if command == "train":
        sub.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        sub.add_argument("--retrain", action="store_true", help="train the offline stage again from scratch")
    if command == "online":
        sub.add_argument("--iterations", type=int, required=True, help="online iterations the run has in the end")
        sub.add_argument("--resume", action="store_true", help="continue an interrupted iteration's training")
    if command == "run":
        sub.add_argument("--iterations", type=int, default=None, help="online iterations (default: the budget's, or 0)")
    add_stage_flags(sub, command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paretoalign ric",
        description="Rewards-in-Context: one model conditioned on reward targets written into its prompt.",
        epilog="Typical use: 'paretoalign ric run --objectives simplicity,informativeness --out runs/ric "
        "--budget quick'; stage by stage: prepare, train, online. 'COMMAND --help' lists each stage's settings.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in STAGE_HELP:
        add_command(commands, command)
    return parser


def _config(args: argparse.Namespace) -> RiCConfig:
    preset = BUDGETS[args.budget]["config"] if args.budget else {}
    return RiCConfig(**{**preset, **overrides_of(args)})


def _check_iterations(iterations: int) -> None:
    if iterations < 0:
        raise ConfigError(f"--iterations must be >= 0, got {iterations}")


def _describe_range(run) -> str:
    return ", ".join(f"{name} {low:.2f}..{high:.2f}" for name, (low, high) in run.manifest["target_range"].items())


def _describe_compute(run) -> str:
    compute = run.manifest["compute"]
    return (f"compute so far: {compute['generated_tokens']} generated tokens, "
            f"{compute['trained_tokens']} trained tokens, {compute['wall_time_s']:.0f} s")


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..methods.ric.recipe import prepare
    from ..objectives import load_objectives

    config = _config(args)
    specs = [spec.strip() for spec in args.objectives.split(",")]
    run = prepare(load_objectives(specs), args.out, config, objective_specs=specs, overwrite=args.overwrite)
    print(f"prepared {run.manifest['stages']['prepare']['responses']} scored responses in {run.path}")
    print(f"target range (normalized rewards): {_describe_range(run)}")
    print(f"next: paretoalign ric train {run.path}")
    return 0


def _open_ric(path: str):
    from ..core.rundir import RunDirectory

    run = RunDirectory.open(path)
    if run.manifest.get("method") != "ric":
        raise ConfigError(
            f"{path} is a {run.manifest.get('method')!r} run, not a RiC run; make one with 'paretoalign ric prepare'"
        )
    return run


def cmd_train(args: argparse.Namespace) -> int:
    from ..methods.ric.recipe import train_offline

    run = _open_ric(args.run_dir)
    train_offline(run, resume=args.resume, retrain=args.retrain, **overrides_of(args))
    stage = run.manifest["stages"]["offline"]
    print(f"trained {stage['steps']} steps on {stage['examples']} examples; adapter in {run.path / stage['adapter']}")
    print(_describe_compute(run))
    return 0


def cmd_online(args: argparse.Namespace) -> int:
    from ..methods.ric.recipe import train_online

    _check_iterations(args.iterations)
    run = _open_ric(args.run_dir)
    train_online(run, args.iterations, resume=args.resume, **overrides_of(args))
    for stage in run.manifest["stages"].get("online", []):
        print(f"online iteration {stage['iteration']}: kept {stage['kept']} of {stage['sampled']} samples "
              f"+ {stage['original_kept']} original; {stage['steps']} steps")
    print(_describe_compute(run))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..core.rundir import RunDirectory
    from ..methods.ric.recipe import run_recipe
    from ..objectives import load_objectives

    iterations = args.iterations if args.iterations is not None else (
        BUDGETS[args.budget]["online_iterations"] if args.budget else 0)
    _check_iterations(iterations)
    specs = [spec.strip() for spec in args.objectives.split(",")]
    run_recipe(load_objectives(specs), args.out, _config(args), online_iterations=iterations, objective_specs=specs,
               overwrite=args.overwrite)
    run = RunDirectory.open(args.out)
    print(f"RiC run finished in {run.path} (target range: {_describe_range(run)})")
    print(_describe_compute(run))
    return 0


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "online": cmd_online, "run": cmd_run}


def main(argv: Sequence[str]) -> int:
    """Parse ``paretoalign ric ...`` and run the sub-command; user errors raise ParetoAlignError."""
    args = build_parser().parse_args(list(argv))
    return COMMANDS[args.command](args)
