"""``paretoalign serve RUN_DIR [RUN_DIR ...]``: an OpenAI-compatible server and web playground over trained runs.

Each run (a folder written by ``paretoalign fit`` or the demo, or a bare method name that serves the embedded
model) becomes one model id; requests carry their own preference (``"preference": {"simplicity": 0.7, ...}``).
The server never trains: runs are loaded with ``methods.load_run``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paretoalign serve",
        description="Serve runs over the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions, streaming) "
        "with a per-request preference, and a web playground at /.",
    )
    parser.add_argument("targets", nargs="+", metavar="RUN_DIR",
                        help="run folders (paretoalign fit / demo), or base, prompting, best_of_n for the embedded model")
    net = parser.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 picks a free one)")
    net.add_argument("--api-key-env", metavar="VAR", default=None,
                     help="environment variable holding the API key; every route but the playground page then "
                     "needs 'Authorization: Bearer <key>'")
    net.add_argument("--insecure", action="store_true",
                     help="allow binding a non-loopback address without an API key")
    limits = parser.add_argument_group("batching and limits")
    limits.add_argument("--max-batch-size", type=int, default=32, help="rows per batch (default %(default)s)")
    limits.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long the oldest request waits for others to batch with (default %(default)s)")
    limits.add_argument("--max-queue", type=int, default=256,
                        help="requests waiting per model before 503 + Retry-After (default %(default)s)")
    limits.add_argument("--max-tokens-cap", type=int, default=1024, help="largest max_tokens (default %(default)s)")
    limits.add_argument("--request-timeout", type=float, default=300.0,
                        help="seconds a request may take, queue included (default %(default)s)")
    limits.add_argument("--max-request-bytes", type=int, default=1 << 20,
                        help="largest request body; bigger ones get 413 (default %(default)s)")
    model = parser.add_argument_group("model")
    model.add_argument("--objectives", default=None,
                       help="objectives a bare method is steered on (default: simplicity,informativeness); a run "
                       "folder uses its own")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    model.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="server log level (default %(default)s)")
    return parser


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_from_env(variable: str | None) -> str | None:
    """The key held by ``variable`` (None when no variable is named); refuses a variable unset or empty."""
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ConfigError(f"--api-key-env names {variable}, which is not set or empty; export {variable}=<key> first")
    return key


def settings_from_args(args: argparse.Namespace):
    """Checked :class:`~paretoalign.interfaces.server.ServerSettings` from the flags (refuses an open bind)."""
    from .server.app import ServerSettings

    for flag in ("max_batch_size", "max_queue", "max_tokens_cap", "max_request_bytes"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.batch_wait_ms < 0 or args.request_timeout <= 0:
        raise ConfigError("--batch-wait-ms must be >= 0 and --request-timeout > 0")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    key = api_key_from_env(args.api_key_env)
    if key is None and not is_loopback(args.host) and not args.insecure:
        raise ConfigError(f"refusing to serve on {args.host} without an API key: anyone who reaches it could use the "
                          "models; pass --api-key-env VAR, bind 127.0.0.1, or add --insecure")
    return ServerSettings(api_key=key, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                          max_queue=args.max_queue, max_tokens_cap=args.max_tokens_cap,
                          request_timeout_s=args.request_timeout, max_request_bytes=args.max_request_bytes)


def model_id(target: str) -> str:
    """A run's model id: its folder name (a bare method name stays as it is)."""
    return Path(target).resolve().name if Path(target).is_dir() else target


def load_served_models(targets: Sequence[str], device: str = "auto", dtype: str = "auto",
                       objectives: str | None = None) -> list:
    """Each target loaded with ``methods.load_run`` (never trains) and described for ``/v1/models``; a run's
    objectives, with its normalization statistics, score the answers."""
    from ..core.rundir import RunDirectory, is_run_dir
    from ..methods import DEFAULT_OBJECTIVES, load_run
    from ..methods.common.recipe import run_objectives
    from .server.engine import describe_policy

    ids = [model_id(target) for target in targets]
    repeated = sorted({name for name in ids if ids.count(name) > 1})
    if repeated:
        raise ConfigError(f"two runs would both be served as {repeated[0]!r}; serve folders with different names")
    models = []
    for target, name in zip(targets, ids):
        policy = load_run(target, device=device, dtype=dtype, objectives=objectives or DEFAULT_OBJECTIVES)
        run = RunDirectory.open(target) if is_run_dir(target) else None
        scorers = run_objectives(run) if run is not None else None
        models.append(describe_policy(name, policy, run.manifest if run else None, scorers))
    return models


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, load every run, and serve until interrupted."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    models = load_served_models(args.targets, args.device, args.dtype, args.objectives)
    from .server import create_app, run_server

    app = create_app(models, settings)
    names = ", ".join(model.id for model in models)
    print(f"serving {names} on http://{args.host}:{args.port} (playground at /, API at /v1)", flush=True)
    run_server(app, args.host, args.port, args.log_level)
    return 0
