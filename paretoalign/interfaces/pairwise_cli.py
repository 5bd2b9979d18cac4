"""``paretoalign winrate`` and ``paretoalign arena``: pairwise evaluation by a judge, thin over
``evaluation.arena``.

- ``winrate``: a finished psoups run's soup against its baselines (prompting, multitask, P-MORL) for every
  combination of its dimensions, on eval prompts: ``winrate.json`` (counts and intervals per criterion) and
  ``winrate.md``.
- ``arena``: two runs or instant methods answer the same prompts; a judge compares them under criteria and/or a
  reward and a cost objective give the Safe-RLHF counts: ``arena.json`` and ``arena.png``.
Inputs are checked before any model loads where they can be; outputs are written atomically into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .cli import add_generation_flags, generation_config_from_args

WINRATE_JSON = "winrate.json"
WINRATE_MD = "winrate.md"
JUDGE_CACHE = "judge_cache"


def add_pairwise_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``winrate`` and ``arena`` sub-commands."""
    p = commands.add_parser(
        "winrate", help="win rates of a psoups run's soup against its baselines, per combination of dimensions",
        description="The Personalized Soups evaluation: for each combination of the run's dimensions (P1A, P2A, "
        "P3A give 7), the soup and each baseline answer the eval prompts with a uniform preference over it, and "
        "the judge compares the answers under each of its dimensions. Prints the soup's win rate (ties count half) "
        "with a Wilson interval, pooled over the combination's dimensions; writes winrate.json (wins, ties, losses "
        "and interval per baseline, combination and dimension) and winrate.md into --out.")
    p.add_argument("--run", required=True, help="a finished psoups run (the --out of `paretoalign fit psoups`)")
    p.add_argument("--baselines", default="prompting,multitask,pmorl",
                   help="comma-separated baselines of the run: prompting, multitask, pmorl (the last two must have "
                   "been trained: fit with --multitask / --pmorl) (default %(default)s)")
    _add_judging_flags(p, "the run's --dataset")
    add_generation_flags(p, max_new_tokens=64)
    p.set_defaults(func=cmd_winrate)

    p = commands.add_parser(
        "arena", help="two policies on the same prompts, compared by a judge and/or a reward and a cost (Safe-RLHF)",
        description="Policies A and B answer the same eval prompts. With --criterion, the judge compares the "
        "answers (A's wins, ties, losses and win rate per criterion); with --reward and --cost, the Safe-RLHF arena "
        "counts A better/worse than B by the reward crossed with A safe/unsafe by the cost (raw cost <= 0 is safe). "
        "Writes arena.json and arena.png into --out and prints the summary.")
    p.add_argument("--a", required=True, metavar="RUN_OR_METHOD",
                   help="policy A: a finished run folder, or an instant method (base, prompting, best_of_n)")
    p.add_argument("--b", required=True, metavar="RUN_OR_METHOD", help="policy B, as --a")
    p.add_argument("--preference-a", default=None, help="A's preference, e.g. P1A=0.5,P2A=0.5 (default: none)")
    p.add_argument("--preference-b", default=None, help="B's preference (default: none)")
    p.add_argument("--reward", default=None, help="reward objective, higher is better (e.g. conciseness, rm:DIR); "
                   "give it with --cost")
    p.add_argument("--cost", default=None, help="cost objective, raw value <= 0 is safe (e.g. harm_cost, "
                   "length_cost?budget=40); give it with --reward")
    p.add_argument("--criterion", action="append", default=[],
                   help="a judging criterion: a dimension (P1A..P3B), an objective (objectives judge) or a sentence "
                   "(local or api judge); repeat for several")
    p.add_argument("--objectives", default=None,
                   help="objectives an instant method is steered on (default: the package's default objectives)")
    p.add_argument("--model", default=None,
                   help="base model of an instant method: hub id, folder or .gguf (default: the embedded model)")
    _add_judging_flags(p, "instructions")
    add_generation_flags(p, max_new_tokens=64)
    p.set_defaults(func=cmd_arena)


def _add_judging_flags(parser: argparse.ArgumentParser, dataset_default: str) -> None:
    parser.add_argument("--judge", default="objectives",
                        help="pairwise judge: objectives (offline), local[:model] or "
                        "api:<model>?base_url=<url>&api_key_env=<VAR> (default %(default)s)")
    parser.add_argument("--prompts", type=int, default=16,
                        help="eval prompts to answer, at most (default %(default)s)")
    parser.add_argument("--dataset", default=None,
                        help=f"prompts: a shipped prompt set, a JSONL file or name[:proportion[:path]], eval split "
                        f"(default: {dataset_default})")
    parser.add_argument("--out", required=True, help="folder to write the results into (created if missing)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")


# ---------------------------------------------------------------------------------------------- winrate


def cmd_winrate(args: argparse.Namespace) -> int:
    from ..core.files import write_json_atomic, write_text_atomic
    from ..core.rundir import RunDirectory
    from ..evaluation.arena import win_rate_markdown, win_rate_table
    from ..methods import get_recipe
    from ..methods.psoups import VARIANTS, dimension_judge, load_variant, stored_dimensions, win_rate_combinations

    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    unknown = [name for name in baselines if name not in VARIANTS or name == "soup"]
    if not baselines or unknown:
        raise ConfigError(f"unknown baseline {(unknown or [''])[0]!r}; choose from "
                          f"{', '.join(v for v in VARIANTS if v != 'soup')}")
    out, generation = _checked_out(args), generation_config_from_args(args)
    run = RunDirectory.open(_existing(args.run, "run directory")).require_finished("psoups")
    dimensions = stored_dimensions(run)
    judge = dimension_judge(args.judge, dimensions, seed=args.seed, cache_dir=out / JUDGE_CACHE)
    dataset = args.dataset or get_recipe("psoups").settings(run).dataset
    prompts = eval_prompts(dataset, args.prompts, args.seed)
    policies = {name: load_variant(run.path, name, args.device, args.dtype) for name in baselines}
    soup = load_variant(run.path, "soup", args.device, args.dtype)
    table = win_rate_table(soup, policies, prompts, win_rate_combinations(dimensions), judge, generation)
    table.update(run=str(run.path), dataset=dataset, generation=_generation_dict(generation))
    heading = (f"Win rate of the {run.path.name} soup (ties count half, 95% Wilson interval), judge {judge.name}, "
               f"{len(prompts)} eval prompts, pooled over each combination's dimensions:")
    markdown = f"{heading}\n\n{win_rate_markdown(table)}\n"
    write_json_atomic(out / WINRATE_JSON, table)
    write_text_atomic(out / WINRATE_MD, markdown)
    print(markdown)
    print(f"written: {out / WINRATE_JSON}, {out / WINRATE_MD}")
    return 0


# ---------------------------------------------------------------------------------------------- arena


def cmd_arena(args: argparse.Namespace) -> int:
    from ..core.preference import Preference
    from ..evaluation.arena import ArenaConfig, run_arena, write_arena
    from ..methods import DEFAULT_OBJECTIVES
    from ..methods.psoups import dimension_judge
    from ..objectives import get_objective
    from ..objectives.judges import ObjectiveJudge, resolve_criterion

    if (args.reward is None) != (args.cost is None):
        raise ConfigError("the Safe-RLHF arena needs both --reward and --cost; give both or neither")
    if not args.criterion and args.reward is None:
        raise ConfigError("nothing to compare on: give --criterion (judged) and/or --reward with --cost")
    out, generation = _checked_out(args), generation_config_from_args(args)
    for preference in (args.preference_a, args.preference_b):
        if preference is not None:
            Preference.parse(preference)
    criteria = [resolve_criterion(text) for text in args.criterion]
    judge = dimension_judge(args.judge, [], seed=args.seed, cache_dir=out / JUDGE_CACHE) if criteria else None
    for criterion in criteria if isinstance(judge, ObjectiveJudge) else ():
        judge.objective_for(criterion)  # a criterion it cannot read fails before any model loads
    reward, cost = (get_objective(spec) if spec else None for spec in (args.reward, args.cost))
    dataset = args.dataset or "instructions"
    prompts = eval_prompts(dataset, args.prompts, args.seed)
    objectives = args.objectives or DEFAULT_OBJECTIVES
    policy_a, policy_b = (_policy(target, args, objectives) for target in (args.a, args.b))
    config = ArenaConfig(generation=generation, preference_a=args.preference_a, preference_b=args.preference_b,
                         reward=reward, cost=cost)
    results = run_arena(policy_a, policy_b, prompts, criteria, judge, config)
    results.update(a=args.a, b=args.b, dataset=dataset, generation=_generation_dict(generation))
    paths = write_arena(results, out)
    print(arena_summary(results))
    print(f"written: {paths['json']}, {paths['png']}")
    return 0


def _policy(target: str, args: argparse.Namespace, objectives: str) -> Any:
    """A finished run's policy, or an instant method on ``--model`` (the embedded model by default)."""
    from ..core.rundir import is_run_dir
    from ..methods import instant_policy, load_run

    if args.model is None or is_run_dir(target):
        return load_run(target, args.device, args.dtype, objectives)
    return instant_policy(target, objectives, model=args.model, device=args.device, dtype=args.dtype)


def arena_summary(results: dict[str, Any]) -> str:
    """A few lines: A's win rate per criterion and the Safe-RLHF counts."""
    lines = [f"A = {results['a']} vs B = {results['b']} on {results['prompts']} prompts"]
    for key, rate in (results.get("criteria") or {}).items():
        lines.append(f"{key}: A wins {rate['wins']}, ties {rate['ties']}, loses {rate['losses']}; win rate "
                     f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}] (judge {results['judge']})")
    safety = results.get("safety")
    if safety:
        lines.append(f"reward {safety['reward']}, cost {safety['cost']}: better & safe {safety['better_and_safe']}, "
                     f"better but unsafe {safety['better_but_unsafe']}, worse but safe {safety['worse_but_safe']}, "
                     f"worse & unsafe {safety['worse_and_unsafe']} (reward ties {safety['reward_ties']}); "
                     f"safe share A {safety['safe_share_a']:.2f}, B {safety['safe_share_b']:.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- shared


def eval_prompts(dataset: str, count: int, seed: int) -> list[str]:
    """The first ``count`` distinct prompts of a prompt dataset's eval split (shipped set, file or mixture spec)."""
    from ..data import load_mixture

    if count <= 0:
        raise ConfigError(f"--prompts must be > 0, got {count}")
    prompts = list(dict.fromkeys(record.prompt for record in load_mixture([dataset], seed=seed, prompt_split="eval")))
    if not prompts:
        raise ConfigError(f"dataset {dataset!r} has no prompts in its eval split; give another --dataset")
    return prompts[:count]


def _checked_out(args: argparse.Namespace) -> Path:
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder to write the results into")
    return out


def _existing(path: str, what: str) -> Path:
    found = Path(path).expanduser()
    if not found.exists():
        raise ConfigError(f"{what} {str(found)!r} does not exist; give the --out folder of a finished fit")
    return found


def _generation_dict(generation: Any) -> dict[str, Any]:
    return {key: getattr(generation, key) for key in ("max_new_tokens", "temperature", "do_sample", "top_p", "top_k",
                                                      "seed")}
