"""``paretoalign mod ...``: multi-objective decoding over per-objective policies.

    paretoalign mod decode --adapters simplicity=runs/s,friendliness=runs/f \\
        --preference simplicity=0.3,friendliness=0.7 --prompt "How do I cook rice?"
    paretoalign mod decode --models a=DIR_A,b=DIR_B --preference a=0.5,b=0.5 --prompt ... --beams 4
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..core.errors import ConfigError
from .cli import add_generation_flags, add_model_flags, generation_config_from_args


def build_parser() -> argparse.ArgumentParser:
    """The ``paretoalign mod`` parser with its ``decode`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="paretoalign mod",
        description="MOD: fuse one policy per objective token by token with the preference's weights.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "decode", help="answer prompts with the fused policies",
        description="Load one policy per objective (LoRA adapters on --model, or full models) and answer each "
        "--prompt from their fused next-token scores. Objectives with weight 0 cost nothing.",
    )
    policies = p.add_mutually_exclusive_group(required=True)
    policies.add_argument("--adapters", action="append", metavar="OBJECTIVE=DIR[,OBJECTIVE=DIR...]",
                          help="a LoRA adapter folder per objective, on the base --model (run as one batched forward)")
    policies.add_argument("--models", action="append", metavar="OBJECTIVE=MODEL[,OBJECTIVE=MODEL...]",
                          help="a model (folder, .gguf or hub id) per objective; --model, if given, is the reference")
    p.add_argument("--preference", required=True, help="weights over the policies' objectives, e.g. a=0.3,b=0.7")
    p.add_argument("--normalize-weights", action="store_true", help="rescale the weights to sum to 1")
    p.add_argument("--prompt", action="append", required=True, help="a user message to answer (repeat for several)")
    p.add_argument("--divergence", choices=["reverse_kl", "forward_kl", "alpha"], default="reverse_kl",
                   help="how the policies are fused (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="alpha of --divergence alpha, > 0 (default %(default)s)")
    p.add_argument("--beams", type=int, default=1,
                   help="beam search over the fused score with this many beams; 1 samples (default %(default)s)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="with --beams: rank beams by score / length**this (default %(default)s)")
    add_model_flags(p)
    add_generation_flags(p, max_new_tokens=128)
    p.set_defaults(func=cmd_decode)
    return parser


def policy_specs(values: Sequence[str], flag: str) -> dict[str, str]:
    """``["a=DIR,b=DIR", "c=DIR"]`` -> ``{"a": "DIR", ...}``; a one-line ConfigError for a malformed part."""
    specs: dict[str, str] = {}
    for part in (piece.strip() for value in values for piece in value.split(",")):
        name, sep, where = part.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise ConfigError(f"{flag} part {part!r} is not OBJECTIVE=PATH; e.g. {flag} simplicity=runs/s,friendliness=runs/f")
        if name.strip() in specs:
            raise ConfigError(f"objective {name.strip()!r} is given twice in {flag}; give one policy per objective")
        specs[name.strip()] = where.strip()
    return specs


def cmd_decode(args: argparse.Namespace) -> int:
    """Answer each prompt with MOD for the preference and print the answers."""
    from ..core.preference import Preference
    from ..methods.mod import load_mod_policy

    adapters = policy_specs(args.adapters, "--adapters") if args.adapters else None
    models = policy_specs(args.models, "--models") if args.models else None
    preference = Preference.parse(args.preference, known=adapters or models, normalize=args.normalize_weights)
    if args.beams < 1:
        raise ConfigError(f"--beams must be >= 1, got {args.beams}")
    config = generation_config_from_args(args)
    policy = load_mod_policy(
        adapters=adapters, models=models, base=args.model, dtype=args.dtype, device=args.device, divergence=args.divergence,
        alpha=args.alpha, beams=args.beams, length_penalty=args.length_penalty,
    )
    responses = policy.generate(args.prompt, preference, config)
    print("\n\n".join(response.text for response in responses))
    return 0


def main(argv: Sequence[str]) -> int:
    """Parse ``paretoalign mod ...`` and run the command; user errors raise ParetoAlignError."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)
