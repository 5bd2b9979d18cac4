"""Tokens per second of ``paretoalign serve`` under concurrent clients against offline batched ``generate``.

One policy (the embedded default model as ``base`` unless ``--run`` names a run folder or method), the same
requests both ways: distinct prompts, one seed, so the server and the offline call sample the very same
tokens. Offline: one ``policy.generate`` call over all requests, batch ``--batch-size``. Served: a real
uvicorn server on loopback (in this process), ``--clients`` concurrent OpenAI clients each sending its share
of the requests one after another; the server's scheduler batches whatever is waiting. The two alternate
``--repeats`` times after a warm-up batch and the best of each counts (other work on a shared machine only
ever slows a pass down); the CPU seconds of the process are reported beside the wall-clock ones.

    python benchmarks/serve_throughput.py [--clients 32] [--requests 64] [--max-tokens 32] [--run RUN_DIR]

Ends with ``RATIO serve_vs_offline_tokens_per_s=<served/offline>`` (target >= 0.8), the same ratio per CPU
second, and the p50 / p99 latency of a request as its client sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from paretoalign.generation import GenerationConfig  # noqa: E402
from paretoalign.interfaces.server import BackgroundServer, ServerSettings, create_app, describe_policy  # noqa: E402
from paretoalign.methods import load_run  # noqa: E402

TOPICS = ["the sky", "sleep", "the sea", "rice", "photosynthesis", "Romeo and Juliet", "exercise", "refrigerators",
          "robots", "autumn leaves", "breakfast", "the climate", "languages", "teachers", "ocean tides", "pancakes"]
ASKS = ["Explain {} to a child.", "Give me three facts about {}.", "Write two sentences about {}.",
        "What should everyone know about {}?"]


def prompts(count: int) -> list[str]:
    """``count`` distinct prompts (distinct so that one seed gives every request its own sample)."""
    every = [ask.format(topic) for ask in ASKS for topic in TOPICS]
    return [every[i % len(every)] + ("" if i < len(every) else f" (take {i // len(every) + 1})") for i in range(count)]


@dataclass
class Pass:
    """One measured pass: answers, tokens generated, wall and process CPU seconds, per-request latencies."""

    answers: list[str]
    tokens: int
    seconds: float
    cpu_seconds: float
    latencies: list[float] = field(default_factory=list)

    def rate(self) -> float:
        return self.tokens / self.seconds


def timed(run) -> Pass:
    wall, cpu = time.perf_counter(), time.process_time()
    answers, tokens, latencies = run()
    return Pass(answers, tokens, time.perf_counter() - wall, time.process_time() - cpu, latencies)


def offline(policy, requests: list[str], args: argparse.Namespace) -> tuple[list[str], int, list[float]]:
    """(answers, tokens, no latencies) of one batched ``policy.generate`` over every request."""
    config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                              batch_size=args.batch_size)
    responses = policy.generate(requests, None, config)
    return [r.text for r in responses], sum(len(r.token_ids) for r in responses), []


async def served(url: str, model: str, requests: list[str], args: argparse.Namespace):
    """(answers, tokens, per-request latencies) with ``args.clients`` clients sending concurrently."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    answers: list[str | None] = [None] * len(requests)
    tokens, latencies = [0] * len(requests), []

    async def run_client(first: int) -> None:
        for index in range(first, len(requests), args.clients):
            sent = time.perf_counter()
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": requests[index]}], max_tokens=args.max_tokens,
                temperature=args.temperature, seed=args.seed)
            latencies.append(time.perf_counter() - sent)
            answers[index], tokens[index] = reply.choices[0].message.content, reply.usage.completion_tokens

    await asyncio.gather(*(run_client(first) for first in range(args.clients)))
    await client.close()
    return answers, sum(tokens), latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="base", help="run folder or bare method to serve (default %(default)s)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="offline batch size and server --max-batch-size")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="alternating passes of each; the best counts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    policy = load_run(args.run, device=args.device, dtype=args.dtype)
    requests = prompts(args.requests)
    offline(policy, requests[: args.batch_size], args)  # warm-up: the first full batch pays one-time set-up (5x)
    settings = ServerSettings(max_batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms,
                              max_queue=args.requests, max_tokens_cap=args.max_tokens)
    app = create_app([describe_policy("bench", policy)], settings)
    offline_passes, served_passes = [], []
    with BackgroundServer(app) as server:
        for _ in range(args.repeats):
            offline_passes.append(timed(lambda: offline(policy, requests, args)))
            served_passes.append(timed(lambda: asyncio.run(served(server.url, "bench", requests, args))))
    alone, serve = max(offline_passes, key=Pass.rate), max(served_passes, key=Pass.rate)
    batches = app.state.engines["bench"].batches / args.repeats
    same = sum(a == b for a, b in zip(serve.answers, alone.answers))
    print(f"policy {policy.name} ({args.run}), {args.requests} requests, {args.max_tokens} max tokens, "
          f"temperature {args.temperature}, seed {args.seed}, best of {args.repeats}")
    print(f"offline  batch {args.batch_size}: {alone.tokens} tokens in {alone.seconds:.2f} s "
          f"({alone.cpu_seconds:.1f} CPU s) = {alone.rate():.1f} tokens/s")
    print(f"served   {args.clients} clients: {serve.tokens} tokens in {serve.seconds:.2f} s "
          f"({serve.cpu_seconds:.1f} CPU s) = {serve.rate():.1f} tokens/s, {batches:g} batches per pass, "
          f"{same}/{len(requests)} answers identical to offline")
    print(f"LATENCY p50_s={percentile(serve.latencies, 50):.3f} p99_s={percentile(serve.latencies, 99):.3f}")
    print(f"RATIO serve_vs_offline_tokens_per_cpu_s="
          f"{(serve.tokens / serve.cpu_seconds) / (alone.tokens / alone.cpu_seconds):.3f}")
    print(f"RATIO serve_vs_offline_tokens_per_s={serve.rate() / alone.rate():.3f}")


if __name__ == "__main__":
    main()
