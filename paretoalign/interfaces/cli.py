"""The ``paretoalign`` command line: a thin layer over the library.

Every user-caused error (a ``ParetoAlignError``) ends as one line on stderr and exit status 2.
Heavy imports happen inside the sub-commands so ``--help`` stays instant. Every method's settings come from
its recipe's ``Config`` through the one dataclass <-> YAML <-> flags parser (``core.config``).
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

FULL_FIT_ALIASES = {"soups": ("train",), "ric": ("run",), "mod": ("train",)}
"""``paretoalign METHOD ALIAS`` runs the whole fit, as these commands did before ``fit`` existed."""


def add_generation_flags(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """Sampling flags shared by every command that generates."""
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens to generate (default %(default)s)")
    group.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default %(default)s)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default %(default)s)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all (default %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="random seed; same seed, same output (default %(default)s)")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --dtype, shared by every command that loads a base model."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None,
                       help="hub id, local folder, or .gguf file (default: the embedded smollm2-135m-instruct)")
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
    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature if args.temperature > 0 else 1.0,
                            do_sample=args.temperature > 0, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                            **overrides)


# ---------------------------------------------------------------------------------------------- commands


def cmd_objectives(args: argparse.Namespace) -> int:
    from ..objectives import available_objectives

    objectives = available_objectives()
    width = max(len(name) for name in objectives)
    for name, description in objectives.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..core.preference import Preference
    from ..methods import instant_policy, load_run
    from ..methods.prompting import INSTRUCTIONS

    preference = None  # checked before any model loads
    if args.preference:
        known = _run_objective_names(args.run) if args.run else list(INSTRUCTIONS)
        preference = Preference.parse(args.preference, known=known, normalize=args.normalize_weights)
    config = generation_config_from_args(args, system_prompt=args.system)
    constraints = _check_constraints(args)
    if args.run:
        policy = load_run(args.run, device=args.device, dtype=args.dtype)
    else:
        target = "prompting" if preference is not None else "base"
        policy = instant_policy(target, args.objectives, model=args.model, device=args.device, dtype=args.dtype)
    if preference is not None and policy.objectives is not None:
        Preference.parse(args.preference, known=policy.objectives, normalize=args.normalize_weights)
    responses = policy.generate(args.prompt, preference, config, **constraints)
    scores = _scores(policy, args, responses) if args.scores else [None] * len(responses)
    for response, scored in zip(responses, scores):
        _print_answer(response, preference, scored, args, several=len(responses) > 1)
    return 0


def _check_constraints(args: argparse.Namespace) -> dict:
    """``constraints=`` for a constrained run (safe_rlhf), checked before any model loads."""
    from ..core.errors import ConfigError
    from ..core.rundir import RunDirectory, is_run_dir
    from ..methods import get_recipe

    if not args.constraint:
        return {}
    method = RunDirectory.open(args.run).method if args.run and is_run_dir(args.run) else "prompting"
    if not get_recipe(method).accepts_constraints:
        raise ConfigError(f"method {method!r} takes no constraints; drop --constraint or use a safe_rlhf run")
    return {"constraints": args.constraint}


def _run_objective_names(run_dir: str) -> list[str] | None:
    """The objective names a run was fitted on, from its manifest (None when unknown before loading)."""
    from ..core.rundir import RunDirectory, is_run_dir

    if not is_run_dir(run_dir):
        return None
    specs = RunDirectory.open(run_dir).fingerprint.get("objectives") or []
    if not specs or any(spec.startswith("rm:") for spec in specs):
        return None
    return [spec.partition("?")[0] for spec in specs]


def _scores(policy, args: argparse.Namespace, responses) -> list[dict]:
    """The oriented scores of each answer on the run's objectives (or --objectives for a bare method)."""
    from ..methods.common.recipe import resolve_objectives
    from ..objectives import score_report

    names = policy.objectives if policy.objectives and len(policy.objectives) <= 8 else args.objectives.split(",")
    objectives = resolve_objectives(list(names))
    return score_report(objectives, [r.prompt for r in responses], [r.text for r in responses])


def _print_answer(response, preference, scored, args: argparse.Namespace, several: bool) -> None:
    cut_off = response.finish_reason == "length"
    if args.jsonl:
        row = {"prompt": response.prompt, "preference": preference.as_dict() if preference else None,
               "answer": response.text, "finish_reason": response.finish_reason, "cut_off": cut_off,
               "steering": response.meta.get("steering")}
        if scored is not None:
            row["scores"] = scored["scores"]
        print(json.dumps(row, ensure_ascii=False))
        return
    if several:
        print(f"### {response.prompt}")
    print(response.text + (" [... cut off at --max-new-tokens]" if cut_off else ""))
    if scored is not None:
        print("scores: " + ", ".join(f"{name}={value:.3g}" for name, value in scored["scores"].items()))
    if several:
        print()


def cmd_score(args: argparse.Namespace) -> int:
    from ..core.rundir import RunDirectory
    from ..data import ScoredResponse, read_jsonl, write_jsonl
    from ..objectives import apply_stats, load_objectives, score_report

    objectives = load_objectives(args.objectives)
    if args.run:
        stored = RunDirectory.open(args.run).manifest.get("normalization") or {}
        apply_stats([o for o in objectives if o.name in stored], stored)
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


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a recipe (up to ``until``) into ``--out``; resumes or reloads a run with the same settings."""
    from ..core.config import overrides_from_namespace, read_yaml
    from ..methods import get_recipe

    recipe = get_recipe(args.method)
    values = {**(read_yaml(args.config) if args.config else {}), **overrides_from_namespace(recipe.Config, args)}
    config = recipe.config(args.preset, **values)
    run = recipe.fit(args.objectives, args.out, config, overwrite=args.overwrite, until=args.until,
                     log=lambda message: print(message, file=sys.stderr))
    compute = run.compute
    state = "finished" if run.finished else f"stopped after {args.until}"
    print(f"{recipe.name} run {state} in {run.path} ({compute['generated_tokens']} tokens generated, "
          f"{compute['trained_tokens']} trained, {compute['wall_time_s']:.1f} s)")
    if run.finished:
        print(f"try: paretoalign generate --run {run.path} --preference ... --prompt \"...\"")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..evaluation.campaign import SweepPlan, run_sweep

    preset = _preset_with_overrides(args)
    methods = args.methods.split(",") if args.methods else list(preset.methods)
    plan = SweepPlan(objectives=args.objectives, methods=methods, preset=preset, seed=args.seed, device=args.device,
                     dtype=args.dtype)
    return _finish_sweep(run_sweep(plan, args.out, overwrite=args.overwrite))


def cmd_eval(args: argparse.Namespace) -> int:
    """Sweep methods and/or run directories; a previous sweep is re-swept with its plan and scale; the base model's
    row is always there for scale."""
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.rundir import RunDirectory, is_run_dir
    from ..evaluation.campaign import SweepPlan, run_sweep
    from ..methods import DEFAULT_OBJECTIVES

    entries = [entry.strip() for entry in args.target.split(",") if entry.strip()]
    methods, objectives, model, stats, artifacts = entries, args.objectives, args.model, None, None
    for entry in entries:
        if os.sep in entry and not Path(entry).exists():
            raise ConfigError(f"run directory {entry!r} does not exist; give the --out folder of fit, demo or eval")
        if Path(entry).exists() and not is_run_dir(entry):
            raise ConfigError(f"{entry!r} is not a paretoalign run directory (no valid manifest.json); give a run "
                              "folder written by fit, demo or eval, or a method name")
    runs = [RunDirectory.open(entry) for entry in entries if is_run_dir(entry)]
    if len(entries) == 1 and runs and runs[0].method == "sweep":
        plan = runs[0].manifest["plan"]
        methods, model, artifacts = plan["methods"], plan["model"], entries[0]
        if not objectives:  # same objectives: reuse the stored scale so the fronts stay comparable
            objectives, stats = plan["objectives"], runs[0].manifest.get("normalization")
    elif runs and not objectives:
        objectives = ",".join(runs[0].fingerprint.get("objectives", [])) or None
        stats = runs[0].manifest.get("normalization")
    if "base" not in methods:
        methods = ["base", *methods]
    plan = SweepPlan(objectives=objectives or DEFAULT_OBJECTIVES, methods=methods, preset=_preset_with_overrides(args),
                     model=model, prompts_file=args.prompts, seed=args.seed, device=args.device, dtype=args.dtype,
                     artifacts_from=artifacts)
    return _finish_sweep(run_sweep(plan, args.out, overwrite=args.overwrite, stats=stats))


def _preset_with_overrides(args: argparse.Namespace):
    from dataclasses import replace

    from ..core.errors import ConfigError
    from ..evaluation.campaign import PRESETS

    flags = {"samples_per_prompt": "samples", "eval_prompts": "eval_prompts", "points_per_axis": "points",
             "max_new_tokens": "max_new_tokens"}
    overrides = {field: getattr(args, flag) for field, flag in flags.items() if getattr(args, flag) is not None}
    for field, value in overrides.items():
        if value <= 0:
            raise ConfigError(f"--{flags[field].replace('_', '-')} must be > 0, got {value}")
    return replace(PRESETS[args.preset], **overrides)


def _finish_sweep(run) -> int:
    from ..evaluation import load_results
    from ..evaluation.campaign import summary_table

    print(summary_table(load_results(run.path / "results.json")))
    print(f"\nreport: {run.path / 'report.html'}")
    return 0


# ---------------------------------------------------------------------------------------------- parsers


def _add_sweep_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--preset", choices=["quick", "full"], default="quick",
                        help="quick: <= 10 min on a 2-core CPU; full: more prompts, samples and tokens, and the "
                        "methods' full presets (default %(default)s)")
    parser.add_argument("--out", default=default_out, help="run directory to write (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous sweep in --out (built beside it, swapped in when finished; its "
                        "fitted methods are reused when their settings match)")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (overrides the preset)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="number of eval prompts (overrides the preset)")
    parser.add_argument("--points", type=int, default=None,
                        help="grid points per objective axis (default: the preset's, 6 quick, 11 full)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per response (overrides the preset)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")


def _add_fit_parser(commands: argparse._SubParsersAction, recipe, prog_name: str, until: str | None,
                    help_text: str) -> None:
    """``fit METHOD`` (or ``METHOD STAGE``): run options plus one flag per field of the recipe's Config."""
    from ..core.config import add_config_arguments

    stages = ", ".join(recipe.stages) or "none (nothing to train: records the plan)"
    p = commands.add_parser(prog_name, help=help_text, description=f"{recipe.summary}. Stages: {stages}. "
                            "Settings: the preset, then --config YAML, then flags. A second fit into the same --out "
                            "with the same settings resumes an interrupted run or does nothing for a finished one.")
    p.add_argument("--objectives", required=True, help="comma-separated objectives, e.g. simplicity,informativeness "
                   "(see `paretoalign objectives`)")
    p.add_argument("--out", required=True, help="run directory to write (or resume)")
    p.add_argument("--preset", choices=list(recipe.presets), default="quick",
                   help="settings preset: quick (CPU-sized) or full (the paper's) (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run of this method fitted with other settings (built beside it, swapped in when done)")
    if until is None and recipe.stages:
        p.add_argument("--until", choices=list(recipe.stages), default=None, help="stop after this stage")
    add_config_arguments(p, recipe.Config, presets=recipe.presets)
    p.set_defaults(func=cmd_fit, method=recipe.name, **({"until": until} if until or not recipe.stages else {}))


def _add_method_programs(commands: argparse._SubParsersAction) -> None:
    """``paretoalign METHOD STAGE|ALIAS`` for every recipe with stages: fit up to that stage."""
    from ..methods import RECIPES

    for recipe in RECIPES.values():
        if not recipe.stages or recipe.name in TRAINING_COMMANDS:  # `paretoalign morlhf` is the trainer
            continue
        program = commands.add_parser(recipe.name, help=f"{recipe.summary} (stages: {', '.join(recipe.stages)})")
        steps = program.add_subparsers(dest="step", metavar="STAGE", required=True)
        for stage in recipe.stages:
            _add_fit_parser(steps, recipe, stage, stage, f"fit {recipe.name} up to its {stage} stage")
        for alias in FULL_FIT_ALIASES.get(recipe.name, ()):
            _add_fit_parser(steps, recipe, alias, None, f"the whole fit (same as `paretoalign fit {recipe.name}`)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..methods import RECIPES

    parser = argparse.ArgumentParser(
        prog="paretoalign",
        description="Align a language model to several objectives and choose the trade-off per request.",
        epilog="Run 'paretoalign COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"paretoalign {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("objectives", help="list the objectives with a one-line description")
    p.set_defaults(func=cmd_objectives)

    p = commands.add_parser("fit", help="fit a method into a run directory (resumable; see 'fit METHOD --help')",
                            description="Fit a method: " + "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values()))
    methods = p.add_subparsers(dest="method_name", metavar="METHOD", required=True)
    for recipe in RECIPES.values():
        _add_fit_parser(methods, recipe, recipe.name, None, recipe.summary)

    p = commands.add_parser("generate", help="answer prompts with a fitted run or an instant method",
                            description="Answer with the policy of a finished run (--run DIR, any method) or, without "
                            "--run, the embedded model: prompted with --preference, else plain.")
    p.add_argument("--prompt", action="append", required=True, help="a user message to answer (repeat for several)")
    p.add_argument("--run", default=None, help="a finished run directory (paretoalign fit --out), or an instant "
                   "method: base, prompting, best_of_n")
    p.add_argument("--preference", default=None, help="the trade-off, e.g. simplicity=0.7,informativeness=0.3")
    p.add_argument("--normalize-weights", action="store_true", help="rescale --preference weights to sum to 1")
    p.add_argument("--constraint", action="append", default=None,
                   help="a cost bound for a constrained run (safe_rlhf), e.g. \"length_cost<=4\"; repeatable")
    p.add_argument("--objectives", default="simplicity,informativeness",
                   help="objectives of a bare method and of --scores (default %(default)s)")
    p.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    p.add_argument("--jsonl", action="store_true",
                   help="one JSON line per answer: prompt, preference, answer, finish_reason, cut_off, steering")
    p.add_argument("--scores", action="store_true", help="add each answer's oriented objective scores")
    add_model_flags(p)
    add_generation_flags(p, max_new_tokens=128)
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser(
        "score", help="score prompt/response pairs from a JSONL file",
        description="Score each line {\"prompt\": ..., \"response\": ...} of a JSONL file with the given "
        "objectives and write it back as a scored record with, per objective: \"scores\" oriented so higher "
        "is better (raw x direction: 47 words give conciseness -47, 2 profane words harmlessness -2); "
        "\"raw\" the measurement with its unit ({\"conciseness\": {\"words\": 47}}); and \"rewards\" the "
        "normalized reward when normalization statistics are known (--run; Python API: objectives.score_report). "
        "Scoring a scored file again adds to these fields.",
    )
    p.add_argument("--objectives", required=True, help="comma-separated objective names, e.g. simplicity,relevance")
    p.add_argument("--input", required=True, help="JSONL file with prompt and response fields")
    p.add_argument("--output", default=None, help="where to write the scored JSONL (default: stdout)")
    p.add_argument("--run", default=None, help="a run directory whose normalization statistics give \"rewards\"")
    p.set_defaults(func=cmd_score)

    from ..methods import DEFAULT_OBJECTIVES

    p = commands.add_parser(
        "demo", help="the main job: sweep methods over a preference grid on the embedded model",
        description="Evaluate methods on the embedded default model over a weight grid (trained ones are fitted "
        "first, sized by --preset), and write results.json, front.png, kl.png and report.html.",
    )
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help="two or more objectives (default %(default)s)")
    p.add_argument("--methods", default=None, help=f"methods to sweep, from {', '.join(RECIPES)} (default: the "
                   "preset's)")
    _add_sweep_flags(p, "runs/demo")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("eval", help="sweep methods, finished runs, or a previous sweep (always beside the base)")
    p.add_argument("target", help="comma-separated method names and/or run directories (fit, demo or eval output)")
    p.add_argument("--objectives", default=None, help=f"objectives of the grid (default: the run's, or {DEFAULT_OBJECTIVES})")
    p.add_argument("--prompts", default=None, help="JSONL file of {\"prompt\": ...} lines (default: shipped eval prompts)")
    p.add_argument("--model", default=None, help="base model: hub id, folder or .gguf (default: the embedded model)")
    _add_sweep_flags(p, "runs/eval")
    p.set_defaults(func=cmd_eval)

    from .pairwise_cli import add_pairwise_parsers

    add_pairwise_parsers(commands)

    commands.add_parser("serve", help="serve runs over the OpenAI API with per-request preferences and a playground "
                        "(see 'paretoalign serve --help')", add_help=False)
    for kind, summary in TRAINING_COMMANDS.items():
        commands.add_parser(kind, help=f"{summary} (see 'paretoalign {kind} --help')", add_help=False)
    _add_method_programs(commands)
    return parser


def run_training_command(kind: str, argv: Sequence[str]) -> int:
    """Training commands parse their own flags (one per config field) inside the training layer."""
    from ..training import run_training

    result = run_training(kind, list(argv))
    print(f"trained {result.steps} steps; model in {result.model_dir}")
    safety = getattr(result, "safety", None)
    if safety is not None:
        print(safety.message)
    return 0


def run_serve_command(argv: Sequence[str]) -> int:
    from .serve_cli import main as serve_main

    return serve_main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in TRAINING_COMMANDS:
            return run_training_command(argv[0], argv[1:])
        if argv and argv[0] == "serve":
            return run_serve_command(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ParetoAlignError as exc:
        print(f"paretoalign: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("paretoalign: interrupted; fit again with the same --out and settings to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
