"""Tokens per second of paretoalign's ``generate`` against Hugging Face ``model.generate``, and what bounds them.

One run, side by side, on the embedded default model: float32 and bfloat16, batch 16, 64 new tokens, the
same sampling settings (temperature 0.7, top-k 50, top-p 0.9) and the same rendered, left-padded prompts.
"fixed" bans EOS for all 64 tokens (the same work for both: pure decoding speed); "natural" lets responses
end at EOS (counting the tokens actually produced, up to and including EOS). HF ``generate`` runs with its
best cache for the dtype: each of its cache settings (dynamic, static; ``--hf-compile`` adds static with
``torch.compile``, minutes to build on a CPU) is timed once and the fastest is used. Runs alternate between
the two implementations so load changes on a shared machine hit both alike; the table reports medians.

After the table, per dtype: bytes of weights read and FLOPs per decoding step, the model forward's own step
time (no sampling), the machine's copy bandwidth and matmul rate, and the highest ratio any loop around that
forward could reach against HF (HF's step time over the bare forward's).

    python benchmarks/generation_throughput.py [--dtypes float32,bfloat16] [--repeats 3] [--hf-compile]

Ends with ``RATIO generate_tokens_per_s_vs_hf=<ours/hf, fixed length, the lower of the two dtypes>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import CompileConfig, StaticCache  # noqa: E402
from transformers import GenerationConfig as HFGenerationConfig  # noqa: E402

from paretoalign.core.runtime import set_seed  # noqa: E402
from paretoalign.generation import GenerationConfig, encode_prompts, eos_token_ids, generate  # noqa: E402
from paretoalign.generation.decoding import decode_mode  # noqa: E402
from paretoalign.models.loading import load_model  # noqa: E402

PROMPTS = [
    "Explain why the sky is blue.",
    "Give me three tips for better sleep.",
    "Write a short poem about the sea.",
    "How do I cook rice?",
    "What is photosynthesis? Explain it to a child.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "What are the benefits of regular exercise?",
    "How does a refrigerator keep food cold?",
    "Suggest a name for a friendly robot.",
    "Why do leaves change colour in autumn?",
    "Describe a healthy breakfast.",
    "What is the difference between weather and climate?",
    "How can I learn a new language quickly?",
    "Write a thank-you note to a teacher.",
    "What causes ocean tides?",
    "Give me a simple recipe for pancakes.",
]


def time_ours(model, tokenizer, prompts: list[str], config: GenerationConfig) -> tuple[int, float]:
    """(tokens produced, seconds) of one paretoalign ``generate`` call."""
    start = time.perf_counter()
    responses = generate(model, tokenizer, prompts, config)
    return sum(len(r.token_ids) for r in responses), time.perf_counter() - start


def hf_settings(config: GenerationConfig, tokenizer, eos_ids: list[int], cache: str) -> HFGenerationConfig:
    """HF's generation config for ``config`` with cache setting ``cache`` (dynamic, static, compiled)."""
    settings = HFGenerationConfig(
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=config.min_new_tokens,
        do_sample=config.do_sample,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
    )
    if cache != "dynamic":
        settings.cache_implementation = "static"
    if cache == "compiled":
        settings.compile_config = CompileConfig()
        settings.compile_config._compile_all_devices = True  # transformers compiles only on accelerators otherwise
    else:
        settings.disable_compile = True
    return settings


def time_hf(model, tokenizer, prompts: list[str], config: GenerationConfig, cache: str) -> tuple[int, float]:
    """(tokens produced up to and including EOS, seconds) of one HF ``model.generate`` call."""
    batch = {k: v.to(model.device) for k, v in encode_prompts(tokenizer, prompts).items()}
    eos_ids = sorted(eos_token_ids(model, tokenizer))
    set_seed(config.seed or 0)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**batch, generation_config=hf_settings(config, tokenizer, eos_ids, cache))
    seconds = time.perf_counter() - start
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    ended = torch.isin(new_tokens, torch.tensor(eos_ids, device=new_tokens.device)).int()
    after_eos = (ended.cumsum(-1) - ended) > 0
    return int((~after_eos).sum()), seconds


def median_rates(timers: dict, repeats: int) -> dict[str, tuple[float, int, float]]:
    """Per timer, (median tokens/s, tokens, seconds of the median run); runs alternate between timers."""
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            runs[name].append(timer())
    result = {}
    for name, found in runs.items():
        rates = sorted((tokens / seconds, tokens, seconds) for tokens, seconds in found)
        result[name] = rates[len(rates) // 2]
    return result


def forward_step_seconds(model, tokenizer, prompts: list[str], new_tokens: int) -> float:
    """Median seconds of the bare model forward for one token per row after the prompts (static cache)."""
    batch = encode_prompts(tokenizer, prompts)
    ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + new_tokens)
    mask = torch.nn.functional.pad(mask, (0, new_tokens), value=1)
    position = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0).to(model.device)
    times = []
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, logits_to_keep=1).logits
        position = position[:, -1:] + 1
        for _ in range(new_tokens - 1):
            start = time.perf_counter()
            token = logits[:, -1].argmax(-1, keepdim=True)
            logits = model(input_ids=token, attention_mask=mask, position_ids=position, cache=cache,
                           logits_to_keep=1).logits
            times.append(time.perf_counter() - start)
            position = position + 1
    return statistics.median(times)


def machine_rates(dtype: torch.dtype) -> tuple[float, float]:
    """(copy bandwidth in GB/s counting read + write, matmul GFLOP/s at 1024^3) of this machine, best of 5."""
    source = torch.empty(64 * 2**20, dtype=torch.float32)
    target = torch.empty_like(source)
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    copies, products = [], []
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        copies.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.mm(a, b)
        products.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / min(copies) / 1e9, 2 * 1024**3 / min(products) / 1e9


def step_cost(model, batch_size: int, context: int) -> tuple[float, float]:
    """(bytes of weights read, FLOPs) of one decoding step: every linear layer once (the LM head included),
    plus attention over ``context`` cached positions."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    bytes_read = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    config = model.config
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return bytes_read, batch_size * (2 * weights + attention)


def run_dtype(dtype: str, args, prompts: list[str]) -> dict:
    """Time both implementations and the bounds for one dtype; return the table rows and figures."""
    model, tokenizer = load_model(None, dtype=dtype, device=args.device)
    settings = dict(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.9, top_k=50, seed=0)
    fixed = GenerationConfig(min_new_tokens=args.new_tokens, batch_size=args.batch_size, **settings)
    natural = GenerationConfig(batch_size=args.batch_size, **settings)
    time_ours(model, tokenizer, prompts, fixed)  # warm-up
    caches = ["dynamic", "static"] + (["compiled"] if args.hf_compile else [])
    for cache in caches:  # warm-up (and build, when compiled)
        time_hf(model, tokenizer, prompts, fixed, cache)
    trial = {cache: time_hf(model, tokenizer, prompts, fixed, cache) for cache in caches}
    best = max(trial, key=lambda cache: trial[cache][0] / trial[cache][1])
    rows = []
    for label, config in (("fixed", fixed), ("natural", natural)):
        rates = median_rates(
            {
                "paretoalign": lambda: time_ours(model, tokenizer, prompts, config),
                "hf generate": lambda: time_hf(model, tokenizer, prompts, config, best),
            },
            args.repeats,
        )
        rows.extend((dtype, label, name, *rates[name]) for name in rates)
    prompt_length = encode_prompts(tokenizer, prompts)["input_ids"].shape[1]
    return dict(
        rows=rows,
        ours_mode=decode_mode(model, length_known=True),
        hf_cache=best,
        hf_trial={cache: tokens / seconds for cache, (tokens, seconds) in trial.items()},
        forward=forward_step_seconds(model, tokenizer, prompts, args.new_tokens),
        cost=step_cost(model, len(prompts), prompt_length + args.new_tokens // 2),
        machine=machine_rates(model.dtype),
    )


def report_bounds(dtype: str, found: dict, batch_size: int) -> None:
    """Print what bounds the decoding speed of ``dtype`` (see the module doc)."""
    bytes_read, flops = found["cost"]
    forward = found["forward"]
    bandwidth, matmul = found["machine"]
    ours, hf = (rate for _, label, _, rate, _, _ in found["rows"] if label == "fixed")
    ours_step, hf_step = batch_size / ours, batch_size / hf
    print(
        f"{dtype}: weights read per step {bytes_read / 1e6:.0f} MB, {flops / 1e9:.2f} GFLOP per step; "
        f"bare forward {forward * 1e3:.1f} ms/step = {bytes_read / forward / 1e9:.1f} GB/s of weights, "
        f"{flops / forward / 1e9:.1f} GFLOP/s; machine: copy {bandwidth:.1f} GB/s, matmul {matmul:.1f} GFLOP/s"
    )
    print(
        f"{dtype}: step time paretoalign {ours_step * 1e3:.1f} ms, hf {hf_step * 1e3:.1f} ms, bare forward "
        f"{forward * 1e3:.1f} ms -> any loop around this forward reaches at most {hf_step / forward:.2f}x hf "
        f"(paretoalign spends {100 * (ours_step - forward) / ours_step:.0f}% of its step outside the forward)"
    )


def main() -> None:
    """Run every dtype (printing its table and bounds as soon as they are measured), then the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated (default float32,bfloat16)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-compile", action="store_true", help="also try HF generate with torch.compile")
    args = parser.parse_args()

    prompts = (PROMPTS * (args.batch_size // len(PROMPTS) + 1))[: args.batch_size]
    print(f"batch={args.batch_size} new_tokens={args.new_tokens} repeats={args.repeats} "
          f"threads={torch.get_num_threads()}")
    ratios = {}
    for dtype in args.dtypes.split(","):
        found = run_dtype(dtype, args, prompts)
        trial = ", ".join(f"{cache} {rate:.1f}" for cache, rate in found["hf_trial"].items())
        print(f"{dtype}: paretoalign decodes {found['ours_mode']}; hf generate uses its {found['hf_cache']} cache "
              f"(one trial, tokens/s: {trial})")
        print(f"{'dtype':<9} {'length':<8} {'implementation':<14} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
        for _, label, name, rate, tokens, seconds in found["rows"]:
            print(f"{dtype:<9} {label:<8} {name:<14} {tokens:>7d} {seconds:>8.2f} {rate:>9.1f}")
        report_bounds(dtype, found, args.batch_size)
        rates = {(label, name): rate for _, label, name, rate, _, _ in found["rows"]}
        for label in ("fixed", "natural"):
            ratios[dtype, label] = rates[label, "paretoalign"] / rates[label, "hf generate"]
        print(flush=True)
    for (dtype, label), ratio in ratios.items():
        print(f"RATIO generate_{dtype}_{label}_tokens_per_s_vs_hf={ratio:.2f}")
    fixed = min(ratio for (_, label), ratio in ratios.items() if label == "fixed")
    print(f"RATIO generate_tokens_per_s_vs_hf={fixed:.2f}")


if __name__ == "__main__":
    main()
