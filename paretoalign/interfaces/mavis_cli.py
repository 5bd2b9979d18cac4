"""``paretoalign mavis``: MAVIS value-guided decoding from the command line.

    paretoalign mavis collect --objectives a,b --out trees/iter0-0.parquet --shard 0     # trees from π_ref
    paretoalign mavis merge trees/iter0-*.parquet --out trees/iter0.parquet
    paretoalign mavis train --trees trees/iter0.parquet --objective a --output-dir values/a0
    paretoalign mavis collect --objectives a --value-model values/a0/model --out trees/iter1-a.parquet
    paretoalign mavis train --trees trees/iter1-a.parquet --objective a --eta 0.02 \\
        --model values/a0/model --output-dir values/a1                              # iteration 1
    paretoalign mavis decode --value-model a=values/a1/model --value-model b=values/b1/model \\
        --preference a=0.3,b=0.7 --prompt "Explain rainbows."
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import ConfigError
from .cli import add_generation_flags, add_model_flags, generation_config_from_args


def build_parser() -> argparse.ArgumentParser:
    """The ``mavis`` sub-program's parser: collect, merge, train, decode."""
    from ..training.config import ValueModelConfig, add_config_arguments

    parser = argparse.ArgumentParser(
        prog="paretoalign mavis",
        description="MAVIS: value models from sampled trees; the reference model tilted by their weighted values.",
        epilog="Run 'paretoalign mavis COMMAND --help' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_collect_parser(commands)
    merge = commands.add_parser("merge", help="concatenate tree shards into one file",
                                description="Concatenate shards collected for the same objectives (schema checked).")
    merge.add_argument("shards", nargs="+", help="Parquet shards written by 'mavis collect'")
    merge.add_argument("--out", required=True, help="merged Parquet file to write")
    merge.set_defaults(func=cmd_merge)
    train = commands.add_parser(
        "train", help="train one objective's value model on tree nodes",
        description="Regress a value model on the kept nodes' value − eta·future KL. --model is the base causal "
        "LM (iteration 0) or the previous value model (later iterations continue from it).")
    train.add_argument("--trees", nargs="+", required=True, help="Parquet tree shards (merged on the fly)")
    train.add_argument("--objective", required=True, help="objective whose values to learn")
    train.add_argument("--eta", type=float, default=0.0,
                       help="KL penalty of the soft-value target; use 0.02 for trees of a MAVIS policy (default %(default)s)")
    train.add_argument("--token-head", action="store_true",
                       help="train a per-token Q-head (one forward per decoding step) instead of a scalar head")
    add_config_arguments(train, ValueModelConfig)
    train.set_defaults(func=cmd_train)
    _add_decode_parser(commands)
    return parser


def _add_tree_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tree shape (defaults: METHODS.md)")
    group.add_argument("--root-branching", type=int, default=4, help="children of the root (default %(default)s)")
    group.add_argument("--branching", type=int, default=2, help="children of every other node (default %(default)s)")
    group.add_argument("--depth", type=int, default=5, help="layers below the root (default %(default)s)")
    group.add_argument("--chunk-min", type=int, default=8, help="fewest tokens a layer adds (default %(default)s)")
    group.add_argument("--chunk-max", type=int, default=24, help="most tokens a layer adds (default %(default)s)")
    group.add_argument("--keep-bottom", type=float, default=0.5,
                       help="share of bottom-layer nodes kept for training (default %(default)s)")


def _add_guidance_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("value guidance")
    group.add_argument("--beta", type=float, default=1.0, help="tilt strength, >= 0 (default %(default)s)")
    group.add_argument("--value-normalization", choices=["none", "zscore", "minmax"], default="none",
                       help="none: values in normalized-reward units; zscore/minmax: per step over the candidates "
                       "(default %(default)s)")
    group.add_argument("--allow-eos-first", action="store_true", help="let EOS be the first token (banned by default)")


def _add_collect_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect", help="sample trees of partial responses and score their leaves",
        description="Grow one tree per prompt (one batch per layer) from the reference model, or from the "
        "single-objective MAVIS policy of --value-model, and write one Parquet shard.")
    p.add_argument("--objectives", required=True, help="comma-separated objectives scoring the leaves")
    p.add_argument("--out", required=True, help="Parquet shard to write")
    p.add_argument("--shard", default="shard0", help="name unique to this shard, so shards merge (default %(default)s)")
    p.add_argument("--prompts", default=None, help="JSONL file of {\"prompt\": ...} records (default: shipped train prompts)")
    p.add_argument("--num-prompts", type=int, default=64, help="prompts to grow trees from (default %(default)s)")
    p.add_argument("--stats", default=None,
                   help="JSON of normalization stats {objective: {mean, std}} or a run manifest with 'stats'; "
                   "default: fitted on reference answers to the prompts")
    p.add_argument("--value-model", default=None,
                   help="sample from the MAVIS policy of this value model (one objective), for iterations >= 1")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences decoded together (default %(default)s)")
    _add_tree_flags(p)
    _add_guidance_flags(p)
    p.add_argument("--top-k", type=int, default=40, help="reference candidates scored per step (default %(default)s)")
    add_model_flags(p)
    p.set_defaults(func=cmd_collect)


def _add_decode_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("decode", help="answer prompts with value-guided decoding",
                            description="Tilt the reference model's top-k by the preference-weighted value models.")
    p.add_argument("--value-model", action="append", required=True, metavar="OBJECTIVE=DIR",
                   help="a trained value model for an objective (repeat per objective)")
    p.add_argument("--preference", required=True, help="weights over the value models' objectives, e.g. a=0.3,b=0.7")
    p.add_argument("--normalize-weights", action="store_true", help="rescale the weights to sum to 1")
    p.add_argument("--prompt", action="append", required=True, help="a user message to answer (repeat for several)")
    p.add_argument("--beams", type=int, default=1, help="beam search with this many beams; 1 samples (default %(default)s)")
    p.add_argument("--candidates", type=int, default=1,
                   help="with --beams: keep this many finished beams and answer with the one the value models "
                   "rate highest (default %(default)s)")
    _add_guidance_flags(p)
    add_model_flags(p)
    add_generation_flags(p, max_new_tokens=128)
    p.set_defaults(func=cmd_decode, top_k=40)  # --top-k: the reference candidates scored per step


def _prompts(args: argparse.Namespace) -> list[str]:
    from ..data import PromptRecord, load_prompts, read_jsonl

    records = read_jsonl(args.prompts, PromptRecord) if args.prompts else load_prompts("instructions", "train")
    if args.num_prompts <= 0:
        raise ConfigError(f"--num-prompts must be > 0, got {args.num_prompts}")
    return [record.prompt for record in records][: args.num_prompts]


def _apply_or_fit_stats(objectives, args: argparse.Namespace, model, tokenizer, prompts: list[str]) -> None:
    from ..core.files import existing_file
    from ..generation import GenerationConfig, generate
    from ..objectives import apply_stats, fit_all

    if args.stats:
        path = existing_file(args.stats, "stats file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"stats file {args.stats!r} is not JSON ({exc.msg})") from None
        apply_stats(objectives, data.get("stats", data) if isinstance(data, dict) else {})
        return
    answers = generate(model, tokenizer, prompts, GenerationConfig(seed=args.seed, batch_size=args.batch_size))
    fit_all(objectives, prompts, [answer.text for answer in answers], source=f"reference answers to {len(prompts)} prompts")


def _guidance(args: argparse.Namespace):
    from ..generation.value_guided import GuidanceSettings

    return GuidanceSettings(args.beta, args.top_k, args.value_normalization, not args.allow_eos_first)


def cmd_collect(args: argparse.Namespace) -> int:
    """Grow, score and write one shard of trees."""
    from ..methods.mavis import TreeSampler, TreeShape, collect_trees, load_value_model, write_shard
    from ..models import load_model
    from ..objectives import load_objectives

    shape = TreeShape(args.root_branching, args.branching, args.depth, args.chunk_min, args.chunk_max, args.keep_bottom)
    objectives = load_objectives(args.objectives)
    if args.value_model and len(objectives) != 1:
        raise ConfigError("trees from a MAVIS policy are for its one objective; give exactly one in --objectives")
    prompts = _prompts(args)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    _apply_or_fit_stats(objectives, args, model, tokenizer, prompts)
    if args.value_model:
        value_model, _ = load_value_model(args.value_model, dtype=args.dtype, device=model.device)
        sampler = TreeSampler(model, tokenizer, [(1.0, value_model)], _guidance(args), batch_size=args.batch_size)
        policy = f"mavis:{objectives[0].name}"
    else:
        sampler, policy = TreeSampler(model, tokenizer, batch_size=args.batch_size), "reference"
    table = collect_trees(sampler, prompts, objectives, shape, seed=args.seed, shard=args.shard, policy=policy)
    write_shard(table, args.out)
    print(f"{table.num_rows} nodes from {len(prompts)} prompts ({policy}) -> {args.out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Concatenate shards into one file."""
    from ..methods.mavis import merge_shards, read_shards

    merge_shards(args.shards, args.out)
    print(f"{read_shards([args.out]).num_rows} nodes from {len(args.shards)} shards -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one value model on the kept nodes of the trees."""
    from ..methods.mavis import read_shards, train_value_model, value_records
    from ..training.config import ValueModelConfig, config_from_namespace

    config = config_from_namespace(ValueModelConfig, args)
    records = value_records(read_shards(args.trees), args.objective, args.eta)
    result = train_value_model(records, config, token_head=args.token_head)
    print(f"value model of {args.objective!r} ({len(records)} nodes, {result.steps} steps): {result.model_dir}")
    return 0


def _value_model_folders(specs: Sequence[str]) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ConfigError(f"--value-model {spec!r} is not OBJECTIVE=DIR; e.g. --value-model simplicity=runs/v/model")
        folders[name.strip()] = Path(folder.strip())
    return folders


def cmd_decode(args: argparse.Namespace) -> int:
    """Answer each prompt with the MAVIS policy for the preference."""
    from ..core.preference import Preference
    from ..methods.mavis import MAVISPolicy
    from ..models import load_model

    folders = _value_model_folders(args.value_model)
    preference = Preference.parse(args.preference, known=folders, normalize=args.normalize_weights)
    config = generation_config_from_args(args)
    guidance = _guidance(args)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    policy = MAVISPolicy(model, tokenizer, folders, beta=guidance.beta, top_k=guidance.top_k,
                         value_normalization=guidance.value_normalization, ban_eos_first=guidance.ban_eos_first,
                         value_dtype=args.dtype, beams=args.beams, candidates=args.candidates)
    responses = policy.generate(args.prompt, preference, config)
    print("\n\n".join(response.text for response in responses))
    return 0


def main(argv: Sequence[str]) -> int:
    """Parse ``paretoalign mavis ...`` and run the command; user errors raise ParetoAlignError."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)
