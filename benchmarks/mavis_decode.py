"""Decoding cost of MAVIS against plain sampling, side by side in one process on the default model.

Batch 16, the same prompts, seeds and fixed length (EOS banned, so every row decodes every step): plain
top-k sampling from the reference; MAVIS with 2 objectives and k = 40 scored exactly (one forward of the
k candidates per value model per step, KV-cached prefix); MAVIS with 2 per-token Q-head value models
(one single-token forward per value model per step). Value models are the policy's size (the default
model with a fresh head; speed does not depend on training).

    python benchmarks/mavis_decode.py [--dtype float32] [--new-tokens 16] [--repeats 2]

Ends with ``RATIO mavis_cost_vs_plain=…`` (exact scoring) and ``RATIO mavis_<variant>_cost_vs_plain=…``
per variant: seconds per token relative to plain sampling. Target for the per-token head: at most
1 + (weighted objectives) = 3. ``decode_costs`` is importable (e.g. by ``benchmarks/decode_overhead.py``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation_throughput import best_rates  # noqa: E402  (this folder is on sys.path when run as a script)
from paretoalign.generation import GenerationConfig, generate  # noqa: E402
from paretoalign.generation.value_guided import GuidanceSettings, value_guided_generate  # noqa: E402
from paretoalign.methods.mavis import token_head_from_causal_lm  # noqa: E402
from paretoalign.models import load_model, load_score_model  # noqa: E402

PROMPTS = [
    "Explain why the sky is blue.", "Give me three tips for better sleep.", "Write a short poem about the sea.",
    "How do I cook rice?", "What is photosynthesis? Explain it to a child.",
    "Summarize the plot of Romeo and Juliet in two sentences.", "What are the benefits of regular exercise?",
    "How does a refrigerator keep food cold?", "Suggest a name for a friendly robot.",
    "Why do leaves change colour in autumn?", "Describe a healthy breakfast.",
    "What is the difference between weather and climate?", "How can I learn a new language quickly?",
    "Write a thank-you note to a teacher.", "What causes ocean tides?", "Give me a simple recipe for pancakes.",
]


def _timed(run) -> tuple[int, float]:
    start = time.perf_counter()
    responses = run()
    return sum(len(r.token_ids) for r in responses), time.perf_counter() - start


def decode_costs(model, tokenizer, value_models: dict[str, list], prompts: list[str], config: GenerationConfig,
                 top_k: int = 40, repeats: int = 2) -> dict[str, tuple[float, int, float]]:
    """``{variant: (tokens/s, tokens, seconds)}`` of the fastest run of plain top-k sampling and of MAVIS
    with each list of value models (equal weights); runs alternate so machine load hits all alike."""
    settings = GuidanceSettings(beta=1.0, top_k=top_k)
    plain_config = GenerationConfig(**{**config.__dict__, "top_k": top_k})
    runs = {"plain": lambda: generate(model, tokenizer, prompts, plain_config)}
    for name, models in value_models.items():
        weighted = [(1.0 / len(models), value_model) for value_model in models]
        runs[name] = lambda weighted=weighted: value_guided_generate(model, tokenizer, prompts, config, weighted, settings)
    return best_rates({name: lambda run=run: _timed(run) for name, run in runs.items()}, repeats)


def main() -> None:
    """Load the reference and four value models, warm up, time, print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model, tokenizer = load_model(None, dtype=args.dtype, device=args.device)
    exact = [load_score_model(None, from_causal_lm=True, dtype=args.dtype, device=model.device)[0] for _ in range(2)]
    per_token = [token_head_from_causal_lm(None, dtype=args.dtype)[0].to(model.device) for _ in range(2)]
    prompts = (PROMPTS * (args.batch_size // len(PROMPTS) + 1))[: args.batch_size]
    config = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=0.7,
                              batch_size=args.batch_size, seed=0)
    variants = {"exact": exact, "token_head": per_token}
    warm = GenerationConfig(**{**config.__dict__, "max_new_tokens": 2, "min_new_tokens": 2})
    decode_costs(model, tokenizer, variants, prompts, warm, args.top_k, repeats=1)
    rates = decode_costs(model, tokenizer, variants, prompts, config, args.top_k, args.repeats)

    print(f"device={model.device} dtype={model.dtype} batch={args.batch_size} new_tokens={args.new_tokens} "
          f"k={args.top_k} objectives=2")
    print(f"{'decoding':<18} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'cost x plain':>13}")
    plain_rate = rates["plain"][0]
    for name, (rate, tokens, seconds) in rates.items():
        print(f"{name:<18} {tokens:>7} {seconds:>8.2f} {rate:>9.1f} {plain_rate / rate:>13.2f}")
    print(f"RATIO mavis_cost_vs_plain={plain_rate / rates['exact'][0]:.2f}")
    for name in variants:
        print(f"RATIO mavis_{name}_cost_vs_plain={plain_rate / rates[name][0]:.2f}")


if __name__ == "__main__":
    main()
