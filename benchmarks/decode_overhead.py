"""Decoding cost of MOD and MAVIS against plain sampling, side by side in one process on the default model.

Batch 16, the same prompts, seeds and fixed length (EOS banned, so every row decodes every step):
plain sampling from the base model; MOD with K = 2 LoRA adapters (r = 16, all linear layers, random
non-zero B) on one copy of the base, run as one batched forward over 2 × 16 rows with one KV cache; and
MOD with K = 2 separate models (two copies of the base, a forward and a KV cache each); MAVIS with two
value models the size of the policy (equal weights, k = 40): exact scoring of the k candidates in one
forward per value model, and the per-token value head (one forward per value model per step). Runs
alternate so a change in machine load hits all alike; each row reports its fastest run.

    python benchmarks/decode_overhead.py [--dtype float32] [--new-tokens 32] [--repeats 2] [--no-models] [--no-mavis]

Ends with ``RATIO mod_k2_cost_vs_plain=<seconds per token of MOD (adapters) / plain>`` (target: at most
1.15 × K = 2.3), ``RATIO mod_k2_models_cost_vs_plain=…``, ``RATIO mavis_cost_vs_plain=…`` (exact) and
``RATIO mavis_token_head_cost_vs_plain=…`` (target: at most 1 + 2 weighted objectives = 3).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from generation_throughput import PROMPTS, best_rates  # noqa: E402

from paretoalign.core.preference import Preference  # noqa: E402
from paretoalign.generation import GenerationConfig, generate  # noqa: E402
from paretoalign.generation.value_guided import GuidanceSettings, value_guided_generate  # noqa: E402
from paretoalign.methods.mavis.values import token_head_from_causal_lm  # noqa: E402
from paretoalign.methods.mod import MODPolicy  # noqa: E402
from paretoalign.models import attach_lora, load_model, load_score_model  # noqa: E402

Decoder = Callable[[list[str], GenerationConfig], list]
"""A decoder to time: ``(prompts, config) -> responses``."""

OBJECTIVES = ["simplicity", "friendliness"]
PREFERENCE = Preference.parse("simplicity=0.5,friendliness=0.5")


def two_adapters(model):
    """A copy of ``model`` with one LoRA adapter per objective (random non-zero B: real, distinct policies)."""
    peft_model = attach_lora(copy.deepcopy(model), OBJECTIVES[0])
    attach_lora(peft_model, OBJECTIVES[1])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.01 * torch.randn(parameter.shape, generator=generator))
    return peft_model.eval()


def mod_decoders(model, tokenizer, separate: bool) -> dict[str, Decoder]:
    """Plain sampling, MOD over two adapters (batched), and MOD over two separate models (if ``separate``)."""
    adapters = MODPolicy(two_adapters(model), tokenizer, OBJECTIVES)
    decoders = {
        "plain": lambda prompts, config: generate(model, tokenizer, prompts, config),
        "mod_k2": lambda prompts, config: adapters.generate(prompts, PREFERENCE, config),
    }
    if separate:
        models = MODPolicy([model, copy.deepcopy(model)], tokenizer, OBJECTIVES)
        decoders["mod_k2_models"] = lambda prompts, config: models.generate(prompts, PREFERENCE, config)
    return decoders


def mavis_decoders(model, tokenizer, dtype: str, top_k: int = 40) -> dict[str, Decoder]:
    """MAVIS over two value models (equal weights): exact candidate scoring and the per-token value head."""
    exact = [load_score_model(None, from_causal_lm=True, dtype=dtype, device=model.device)[0] for _ in range(2)]
    per_token = [token_head_from_causal_lm(None, dtype=dtype)[0].to(model.device) for _ in range(2)]
    settings = GuidanceSettings(beta=1.0, top_k=top_k)
    decoders = {}
    for name, value_models in (("mavis", exact), ("mavis_token_head", per_token)):
        weighted = [(1.0 / len(value_models), value_model) for value_model in value_models]
        decoders[name] = (lambda prompts, config, weighted=weighted:
                          value_guided_generate(model, tokenizer, prompts, config, weighted, settings))
    return decoders


def timer(decoder: Decoder, prompts: list[str], config: GenerationConfig) -> Callable[[], tuple[int, float]]:
    """``() -> (tokens produced, seconds)`` of one ``decoder(prompts, config)`` call."""

    def run() -> tuple[int, float]:
        start = time.perf_counter()
        responses = decoder(prompts, config)
        return sum(len(r.token_ids) for r in responses), time.perf_counter() - start

    return run


def main() -> None:
    """Load the default model, build the policies, warm up, time, print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-models", action="store_true", help="skip MOD over two separate models")
    parser.add_argument("--no-mavis", action="store_true", help="skip the MAVIS rows")
    parser.add_argument("--top-k", type=int, default=40, help="MAVIS candidates per step (default %(default)s)")
    args = parser.parse_args()

    model, tokenizer = load_model(None, dtype=args.dtype, device=args.device)
    prompts = (PROMPTS * (args.batch_size // len(PROMPTS) + 1))[: args.batch_size]
    config = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=0.7,
                              batch_size=args.batch_size, seed=0)
    decoders = mod_decoders(model, tokenizer, separate=not args.no_models)
    if not args.no_mavis:
        decoders.update(mavis_decoders(model, tokenizer, args.dtype, args.top_k))
    warm_up = GenerationConfig(**{**config.__dict__, "max_new_tokens": 2, "min_new_tokens": 2})
    for decoder in decoders.values():
        decoder(prompts[:2], warm_up)
    timers = {name: timer(decoder, prompts, config) for name, decoder in decoders.items()}
    rates = best_rates(timers, args.repeats)

    print(f"device={model.device} dtype={model.dtype} batch={args.batch_size} new_tokens={args.new_tokens}")
    print(f"{'decoder':<16} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'cost vs plain':>14}")
    plain_rate = rates["plain"][0]
    for name, (rate, tokens, seconds) in rates.items():
        print(f"{name:<16} {tokens:>7d} {seconds:>8.2f} {rate:>9.1f} {plain_rate / rate:>14.2f}")
    for name, (rate, _, _) in rates.items():
        if name != "plain":
            print(f"RATIO {name}_cost_vs_plain={plain_rate / rate:.2f}")


if __name__ == "__main__":
    main()
