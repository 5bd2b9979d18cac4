"""The ``paretoalign`` command line: a thin layer over the library.

Every user-caused error (a ``ParetoAlignError``) ends as one line on stderr and exit status 2.
Heavy imports happen inside the sub-commands so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..core.errors import ParetoAlignError

EXIT_USAGE = 2

TRAINING_COMMANDS = {
    "sft": "supervised fine-tuning, loss on response tokens only (LoRA by default)",
    "reward-model": "train a Bradley-Terry reward model on preference pairs",
    "cost-model": "train a Safe-RLHF cost model on safety pairs (safe -> cost < 0)",
    "value-model": "train a regression value model on (prompt, response, target)",
    "dpo": "DPO and its variants (dpo_nll, margin, adaptive_margin, ema_margin, modpo)",
    "ppo": "PPO with a critic on one objective's (or a scalarized) reward",
    "morlhf": "PPO on the scalarized reward of one preference (MORLHF)",
    "ppo-lag": "PPO-Lagrangian (Safe-RLHF): maximize reward subject to cost <= threshold",
    "reinforce-lag": "REINFORCE/RLOO with the high-confidence Lagrangian and safety test (HC-RLHF)",
}

RECIPE_COMMANDS = {
    "ric": ("paretoalign.interfaces.ric_cli", "Rewards-in-Context: prepare, train, online, run"),
    "soups": ("paretoalign.interfaces.soups_cli", "Rewarded Soups: one policy per objective, merged per preference"),
    "mod": ("paretoalign.interfaces.mod_cli", "multi-objective decoding: fuse per-objective policies token by token"),
    "mavis": ("paretoalign.interfaces.mavis_cli", "MAVIS value-guided decoding: collect, train, decode"),
}
"""Sub-programs with their own sub-commands: each module's ``main(argv) -> int`` parses its flags and may
raise ``ParetoAlignError`` (turned into one line here)."""


def add_generation_flags(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """Sampling flags shared by every command that generates (generate, mod/mavis decode, soups generate)."""
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens to generate (default %(default)s)")
    group.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default %(default)s)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default %(default)s)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all (default %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="random seed; same seed, same output (default %(default)s)")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --dtype, shared by every command that loads a base model."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help="hub id, local folder, or .gguf file (default: the embedded smollm2-135m-instruct)",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    group.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")


def generation_config_from_args(args: argparse.Namespace, **overrides):
    """A checked GenerationConfig from the flags of :func:`add_generation_flags` (temperature 0 = greedy)."""
    from ..core.errors import ConfigError
    from ..generation import GenerationConfig

    if args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be > 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature if args.temperature > 0 else 1.0,
        do_sample=args.temperature > 0,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        **overrides,
    )


def cmd_objectives(args: argparse.Namespace) -> int:
    from ..objectives import available_objectives

    objectives = available_objectives()
    width = max(len(name) for name in objectives)
    for name, description in objectives.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..core.preference import Preference
    from ..methods import build_policy
    from ..methods.prompting import INSTRUCTIONS
    from ..models import load_model

    preference = None
    if args.preference:
        preference = Preference.parse(args.preference, known=INSTRUCTIONS, normalize=args.normalize_weights)
    config = generation_config_from_args(args, system_prompt=args.system)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    method = "prompting" if preference is not None else "base"
    (response,) = build_policy(method, model, tokenizer, []).generate([args.prompt], preference, config)
    print(response.text)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..data import ScoredResponse, read_jsonl, write_jsonl
    from ..objectives import load_objectives, score_report

    objectives = load_objectives(args.objectives)
    records = read_jsonl(args.input, ScoredResponse)
    report = score_report(objectives, [r.prompt for r in records], [r.response for r in records])
    rows = []
    for record, scored in zip(records, report):
        record.scores.update(scored["scores"])
        extras = {}
        for key in ("rewards", "raw"):  # a rescored file keeps the other objectives' entries
            earlier = record.meta.pop(key) if isinstance(record.meta.get(key), dict) else {}
            extras[key] = {**earlier, **scored.get(key, {})}
        rows.append({**record.to_dict(), **{key: value for key, value in extras.items() if value}})
    if args.output:
        write_jsonl(args.output, rows)
        names = ", ".join(o.name for o in objectives)
        print(f"scored {len(records)} responses on {names} -> {args.output}", file=sys.stderr)
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _preset_with_overrides(args: argparse.Namespace):
    from dataclasses import replace

    from ..core.errors import ConfigError
    from .demo import PRESETS

    preset = PRESETS[args.preset]
    flags = {"samples_per_prompt": "samples", "eval_prompts": "eval_prompts",
             "points_per_axis": "points", "max_new_tokens": "max_new_tokens"}
    overrides = {field: getattr(args, flag) for field, flag in flags.items() if getattr(args, flag) is not None}
    for field, value in overrides.items():
        if value <= 0:
            raise ConfigError(f"--{flags[field].replace('_', '-')} must be > 0, got {value}")
    return replace(preset, **overrides)


def _finish_sweep(run) -> int:
    from ..evaluation import load_results
    from .demo import summary_table

    results = load_results(run.path / "results.json")
    print(summary_table(results))
    print(f"\nreport: {run.path / 'report.html'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import SweepPlan, run_sweep

    preset = _preset_with_overrides(args)
    methods = args.methods.split(",") if args.methods else list(preset.methods)
    plan = SweepPlan(objectives=args.objectives, methods=methods, preset=preset, seed=args.seed, device=args.device,
                     dtype=args.dtype)
    return _finish_sweep(run_sweep(plan, args.out, overwrite=args.overwrite))


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.rundir import RunDirectory
    from .demo import DEFAULT_OBJECTIVES, SweepPlan, run_sweep

    methods, objectives, model, stats, artifacts = args.target.split(","), args.objectives, args.model, None, None
    if Path(args.target).is_dir():
        previous = RunDirectory.open(args.target).manifest
        if "plan" not in previous:
            raise ConfigError(f"run directory {args.target!r} holds no evaluable policy (method {previous.get('method')!r})")
        methods, model = previous["plan"]["methods"], previous["plan"]["model"]
        if not objectives:  # same objectives: reuse the stored scale so the fronts stay comparable
            objectives, stats = previous["plan"]["objectives"], previous.get("normalization")
    preset = _preset_with_overrides(args)
    if artifacts is None and stats is not None and _same_training(previous["plan"], preset.budget, args.seed):
        artifacts = args.target  # trained methods reload the run's artifacts (never retrained into it)
    plan = SweepPlan(objectives=objectives or DEFAULT_OBJECTIVES, methods=methods, preset=preset,
                     model=model, prompts_file=args.prompts, seed=args.seed, device=args.device, dtype=args.dtype,
                     artifacts_from=artifacts)
    return _finish_sweep(run_sweep(plan, args.out, overwrite=args.overwrite, stats=stats))


def _same_training(plan: dict, budget: str, seed: int) -> bool:
    """True when a previous sweep trained its methods as this one would (same budget and seed)."""
    return plan.get("preset", {}).get("budget", "quick") == budget and plan.get("seed") == seed


def _add_sweep_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--preset", choices=["quick", "full"], default="quick",
                        help="quick: <= 10 min on a 2-core CPU; full: more prompts, samples and tokens (default %(default)s)")
    parser.add_argument("--out", default=default_out, help="run directory to write (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (overrides the preset)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="number of eval prompts (overrides the preset)")
    parser.add_argument("--points", type=int, default=None, help="grid points per objective axis (default 11)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per response (overrides the preset)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")


def run_training_command(kind: str, argv: Sequence[str]) -> int:
    """Training commands parse their own flags (one per config field) inside the training layer."""
    from ..training import run_training

    result = run_training(kind, list(argv))
    print(f"trained {result.steps} steps; model in {result.model_dir}")
    safety = getattr(result, "safety", None)
    if safety is not None:
        print(safety.message)
    return 0


def run_recipe_command(name: str, argv: Sequence[str]) -> int:
    """Hand ``paretoalign NAME ...`` to the recipe's own sub-program."""
    from importlib import import_module

    return import_module(RECIPE_COMMANDS[name][0]).main(list(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paretoalign",
        description="Align a language model to several objectives and choose the trade-off per request.",
        epilog="Run 'paretoalign COMMAND --help' for the options of a command.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"paretoalign {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("objectives", help="list the objectives with a one-line description")
    p.set_defaults(func=cmd_objectives)

    p = commands.add_parser("generate", help="answer one prompt with a model (default: the embedded model)")
    p.add_argument("--prompt", required=True, help="the user message to answer")
    p.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    p.add_argument("--preference", default=None,
                   help="steer the answer by prompting, e.g. simplicity=0.7,informativeness=0.3 (weights sum to 1)")
    p.add_argument("--normalize-weights", action="store_true", help="rescale --preference weights to sum to 1")
    add_model_flags(p)
    add_generation_flags(p, max_new_tokens=128)
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser(
        "score",
        help="score prompt/response pairs from a JSONL file",
        description="Score each line {\"prompt\": ..., \"response\": ...} of a JSONL file with the given "
        "objectives and write it back as a scored record with, per objective: \"scores\" oriented so higher "
        "is better (raw x direction: 47 words give conciseness -47, 2 profane words harmlessness -2); "
        "\"raw\" the measurement with its unit ({\"conciseness\": {\"words\": 47}}); and \"rewards\" the "
        "normalized reward when normalization statistics are known (Python API: objectives.score_report). "
        "Scoring a scored file again adds to these fields.",
    )
    p.add_argument("--objectives", required=True, help="comma-separated objective names, e.g. simplicity,relevance")
    p.add_argument("--input", required=True, help="JSONL file with prompt and response fields")
    p.add_argument("--output", default=None, help="where to write the scored JSONL (default: stdout)")
    p.set_defaults(func=cmd_score)

    from .demo import DEFAULT_OBJECTIVES

    p = commands.add_parser(
        "demo",
        help="the main job: sweep every demo-ready method over a preference grid on the embedded model",
        description="Evaluate base, prompting and best-of-N on the embedded default model over a weight grid, "
        "and write results.json, front.png, kl.png and report.html.",
    )
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help="two or more objectives (default %(default)s)")
    p.add_argument("--methods", default=None,
                   help="methods to sweep: base, prompting, best_of_n (instant) and ric, soups, morlhf, mod, mavis "
                   "(trained first, sized by --preset) (default: the preset's; quick: base,prompting,best_of_n; "
                   "full: all of them)")
    _add_sweep_flags(p, "runs/demo")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser(
        "eval",
        help="sweep methods (base, prompting, best_of_n, ric, soups, morlhf, mod, mavis) or a previous run directory",
    )
    p.add_argument("target", help="method name(s), comma-separated, or a run directory written by demo/eval")
    p.add_argument("--objectives", default=None, help=f"objectives of the grid (default: the run's, or {DEFAULT_OBJECTIVES})")
    p.add_argument("--prompts", default=None, help="JSONL file of {\"prompt\": ...} lines (default: shipped eval prompts)")
    p.add_argument("--model", default=None, help="base model: hub id, folder or .gguf (default: the embedded model)")
    _add_sweep_flags(p, "runs/eval")
    p.set_defaults(func=cmd_eval)

    for kind, summary in TRAINING_COMMANDS.items():
        commands.add_parser(kind, help=f"{summary} (see 'paretoalign {kind} --help')", add_help=False)
    for name, (_, summary) in RECIPE_COMMANDS.items():
        commands.add_parser(name, help=f"{summary} (see 'paretoalign {name} --help')", add_help=False)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in TRAINING_COMMANDS:
            return run_training_command(argv[0], argv[1:])
        if argv and argv[0] in RECIPE_COMMANDS:
            return run_recipe_command(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ParetoAlignError as exc:
        print(f"paretoalign: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("paretoalign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
