"""The CUDA paths in a few minutes on a GPU machine (DESIGN.md, "GPU checks"): CI has no GPU, so this script is.

It needs torch, transformers, peft and accelerate (plus this repository), no model hub and no cache: models are
randomly initialised from configs, the default model's (SmolLM2-135M) and a ~1B Llama-shaped one
(Llama-3.2-1B's shape), in bfloat16 on CUDA. Per model:

- generation: paretoalign's decoding loop (``CausalLMScorer`` + ``TokenSampler``, its automatic decode mode)
  against HF ``generate`` with its best cache for the GPU (dynamic, or static, which transformers compiles on
  CUDA), batch 16, 64 new tokens, EOS banned so both do the same work; tokens/s;
- a LoRA training step (r=16 on every linear layer, frozen bf16 base, fp32 adapters under bf16 autocast,
  AdamW): tokens/s and MFU (model FLOPs 4·N·T for the frozen base's forward and input gradients, plus
  attention; against the GPU's dense bf16 peak, or ``--peak-tflops``);
- MOD with K = 2 (``MODPolicy`` over one PeftModel with two adapters), its cost against one adapter decoded
  alone, and weights (1, 0) giving the first adapter's own greedy tokens;
- Rewarded Soups' per-row mixing (``mix_lora_rows``, one batch, one preference per row) against the model
  merged for each row's preference (``merge_lora_deltas``): largest logit difference, and decoding speed of
  four preferences in one mixed batch against one merged batch per preference.

A check that fails prints why and the others still run; the exit status is 1 if any failed. Without CUDA it
exits with a message; ``--cpu-smoke`` runs every check on tiny configs on the CPU instead (to see the script
works; its figures mean nothing).

    python benchmarks/gpu_check.py [--models smollm2-135m,llama-1b] [--peak-tflops 989]
    python benchmarks/gpu_check.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import GenerationConfig as HFGenerationConfig  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
                         max_position_embeddings=8192, tie_word_embeddings=True),
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
                     max_position_embeddings=131072, tie_word_embeddings=True),
}
SMOKE_SHAPES = {
    "smollm2-135m": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    "llama-1b": dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
}
ADAPTERS = ["first", "second"]
SOUPS_TOLERANCE = 5e-2
"""Largest logit difference, mixed vs merged, relative to the largest logit: bf16 rounding is ~1e-2."""
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
"""Dense bf16 peak of common GPUs (SXM parts; a PCIe H100 is lower: pass --peak-tflops)."""


def random_model(shape: dict, device: torch.device) -> LlamaForCausalLM:
    """A Llama of ``shape`` with random weights, bf16, in eval mode."""
    torch.manual_seed(0)
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).to(device=device, dtype=torch.bfloat16).eval()


def synchronized(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def prompt_batch(vocab: int, rows: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompt ids, left-padded to ``length`` (row i has i % 8 padding positions), and their mask."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(rows):
        mask[row, : row % 8] = 0
        ids[row, : row % 8] = 0
    return ids.to(device), mask.to(device)


def check_generation(model, args, device: torch.device) -> list[str]:
    """paretoalign's loop vs HF generate, same batch, same sampling settings, fixed length."""
    from paretoalign.generation import CausalLMScorer, GenerationConfig, TokenSampler, decode_loop

    ids, mask = prompt_batch(model.config.vocab_size, args.batch_size, args.prompt_length, device)
    new = args.new_tokens
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, temperature=0.7, top_k=50, top_p=0.9)

    scorer = CausalLMScorer(model, max_new_tokens=new)  # one for every run, as generate() keeps one per call

    def ours() -> float:
        start = synchronized(device)
        with torch.inference_mode():
            decode_loop(scorer, TokenSampler(config, range(len(ids)), device), ids, mask, max_new_tokens=new,
                        eos_ids=set())
        return len(ids) * new / (synchronized(device) - start)

    def hf(cache: str) -> float:
        settings = HFGenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=True, temperature=0.7,
                                      top_k=50, top_p=0.9, pad_token_id=0, eos_token_id=2)
        if cache == "static":
            settings.cache_implementation = "static"
        start = synchronized(device)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=settings)
        return len(ids) * new / (synchronized(device) - start)

    ours(), hf("dynamic"), hf("static")  # warm-up, and compilation where it applies
    trial = {cache: hf(cache) for cache in ("dynamic", "static")}
    best = max(trial, key=trial.get)
    rates = {"paretoalign": [], "hf": []}
    for _ in range(args.repeats):
        rates["paretoalign"].append(ours())
        rates["hf"].append(hf(best))
    mine, theirs = (sorted(found)[len(found) // 2] for found in rates.values())
    return [f"generation: paretoalign ({scorer.mode}) {mine:.0f} tokens/s, hf generate ({best} cache) {theirs:.0f} "
            f"tokens/s (median of {args.repeats})", f"RATIO generate_tokens_per_s_vs_hf={mine / theirs:.2f}"]


def model_flops_per_token(model, context: int, factor: int) -> float:
    """``factor`` · N for the linear layers (LM head included) plus attention over ``context`` positions."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    attention = 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return factor * weights + factor * attention


def check_lora_step(model, args, device: torch.device, peak_tflops: float | None) -> list[str]:
    """One LoRA training step's tokens/s and MFU under bf16 autocast."""
    from paretoalign.models.lora import attach_lora

    flops_per_token = model_flops_per_token(model, args.train_length // 2, factor=4)
    peft = attach_lora(model, "trained", r=16, alpha=32)
    peft.train()
    parameters = [p for p in peft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (args.train_batch, args.train_length), generator=generator)
    ids = ids.to(device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = peft(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    losses = [step() for _ in range(2)]  # warm-up
    start = synchronized(device)
    for _ in range(args.train_steps):
        losses.append(step())
    seconds = (synchronized(device) - start) / args.train_steps
    tokens_per_s = ids.numel() / seconds
    peft.unload()  # the base model as it was, for the next checks
    lines = [f"lora step: batch {args.train_batch} x {args.train_length} tokens, {seconds * 1e3:.0f} ms/step, "
             f"{tokens_per_s:.0f} tokens/s, losses {losses[0]:.3f} -> {losses[-1]:.3f} (finite: "
             f"{all(map(lambda x: x == x and abs(x) < float('inf'), losses))})",
             f"RATIO lora_step_tokens_per_s={tokens_per_s:.0f}"]
    if peak_tflops:
        mfu = tokens_per_s * flops_per_token / (peak_tflops * 1e12)
        lines += [f"lora step: {flops_per_token * tokens_per_s / 1e12:.1f} TFLOP/s of {peak_tflops:.0f} peak",
                  f"RATIO lora_step_mfu={mfu:.3f}"]
    return lines


def two_adapters(model):
    """A PeftModel with the two :data:`ADAPTERS` on ``model``, B initialised at random so they differ."""
    from paretoalign.models.lora import attach_lora

    peft = attach_lora(model, "first", r=8, alpha=16)
    attach_lora(peft, "second", r=8, alpha=16)
    torch.manual_seed(2)
    for name, parameter in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    return peft.eval()


def check_mod(model, args, device: torch.device) -> list[str]:
    """MOD, K = 2 over one PeftModel: cost against one adapter alone; weights (1, 0) reproduce the first adapter."""
    from paretoalign.core.preference import Preference
    from paretoalign.generation import GenerationConfig, generate
    from paretoalign.methods.mod import MODPolicy
    from paretoalign.models.lora import set_active_adapter

    peft = two_adapters(model)
    tokenizer = small_tokenizer()
    mod = MODPolicy(peft, tokenizer, ADAPTERS)
    prompts = [f"Question {i}: how do I cook rice for {i + 2} people?" for i in range(args.batch_size)]
    new = args.new_tokens
    sampled = GenerationConfig(max_new_tokens=new, min_new_tokens=new, batch_size=args.batch_size, top_k=50)
    greedy = GenerationConfig(max_new_tokens=16, do_sample=False, batch_size=args.batch_size)

    def timed(run: Callable[[], object]) -> float:
        run()  # warm-up
        start = synchronized(device)
        run()
        return synchronized(device) - start

    half = Preference.parse("first=0.5,second=0.5")
    fused_seconds = timed(lambda: mod.generate(prompts, half, sampled))
    set_active_adapter(peft, ADAPTERS[0])
    plain_seconds = timed(lambda: generate(peft, tokenizer, prompts, sampled))
    alone = [r.token_ids for r in generate(peft, tokenizer, prompts, greedy)]
    fused = [r.token_ids for r in mod.generate(prompts, Preference.parse("first=1,second=0"), greedy)]
    same = sum(a == b for a, b in zip(alone, fused))
    peft.unload()
    return [f"mod k=2: {fused_seconds:.2f} s vs one adapter {plain_seconds:.2f} s for {len(prompts)} x {new} tokens; "
            f"weights (1, 0) give the first adapter's greedy tokens in {same}/{len(prompts)} rows (bf16 rounding "
            "can flip near-ties of a random model)",
            f"RATIO mod_k2_cost_vs_plain={fused_seconds / plain_seconds:.2f}"]


def check_soups(model, args, device: torch.device) -> list[str]:
    """Per-row LoRA mixing against the merged model of each row's preference: logits, and decoding speed."""
    from paretoalign.generation import CausalLMScorer, GenerationConfig, TokenSampler, decode_loop
    from paretoalign.models import merge_lora_deltas, mix_lora_rows

    peft = two_adapters(model)
    preferences = [[1.0, 0.0], [0.7, 0.3], [0.3, 0.7], [0.0, 1.0]]
    per_preference = max(args.batch_size // len(preferences), 1)
    weights = [row for row in preferences for _ in range(per_preference)]
    ids, mask = prompt_batch(model.config.vocab_size, len(weights), args.prompt_length, device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        with mix_lora_rows(peft, ADAPTERS, weights):
            mixed = peft(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1].float()
        merged = []
        for row, preference in enumerate(weights):
            merge_lora_deltas(peft, ADAPTERS, preference)
            merged.append(peft(input_ids=ids[row : row + 1], attention_mask=mask[row : row + 1],
                               position_ids=position_ids[row : row + 1]).logits[0, -1].float())
    difference = float((mixed - torch.stack(merged)).abs().max() / torch.stack(merged).abs().max())
    if difference > SOUPS_TOLERANCE:
        raise AssertionError(f"per-row mixing is {difference:.2e} (of the largest logit) from the merged models")

    new = args.new_tokens
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, top_k=50)

    class MixedScorer(CausalLMScorer):
        def __init__(self, mixing):
            super().__init__(peft, max_new_tokens=new)
            self.mixing = mixing

        def keep_rows(self, rows):
            super().keep_rows(rows)
            self.mixing.keep_rows(rows)

    def decode(scorer, rows: slice) -> None:
        decode_loop(scorer, TokenSampler(config, range(len(ids[rows])), device), ids[rows], mask[rows],
                    max_new_tokens=new, eos_ids=set())

    def mixed_run() -> None:
        with torch.inference_mode(), mix_lora_rows(peft, ADAPTERS, weights) as mixing:
            decode(MixedScorer(mixing), slice(None))

    def merged_run() -> None:
        with torch.inference_mode():
            for index, preference in enumerate(preferences):
                merge_lora_deltas(peft, ADAPTERS, preference)
                decode(CausalLMScorer(peft, max_new_tokens=new),
                       slice(index * per_preference, (index + 1) * per_preference))

    seconds = {}
    for name, run in (("mixed", mixed_run), ("merged", merged_run)):
        run()  # warm-up
        start = synchronized(device)
        run()
        seconds[name] = synchronized(device) - start
    peft.unload()
    return [f"soups: per-row mixing vs merged per preference, largest logit difference {difference:.2e} of the "
            f"largest logit; {len(preferences)} preferences x {per_preference} prompts decode in "
            f"{seconds['mixed']:.2f} s mixed vs {seconds['merged']:.2f} s merged one preference at a time",
            f"RATIO soups_rowmix_logit_difference={difference:.2e}",
            f"RATIO soups_rowmix_vs_merged_tokens_per_s={seconds['merged'] / seconds['mixed']:.2f}"]


def small_tokenizer():
    """The tests' offline BPE tokenizer with a ChatML template (ids fit any of these vocabularies)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny import make_tokenizer

    tokenizer = make_tokenizer()
    tokenizer.padding_side = "left"
    return tokenizer


def run_check(name: str, check: Callable[[], list[str]], failures: list[str]) -> None:
    """Run one check; print its lines, or why it failed."""
    print(f"--- {name}", flush=True)
    try:
        for line in check():
            print(line, flush=True)
    except Exception:  # noqa: BLE001 - a failing check is reported and the others still run
        failures.append(name)
        print(f"FAILED {name}:\n{traceback.format_exc()}", flush=True)


def main() -> int:
    """Run every check on every model; 0 if all passed, 1 if one failed, 2 without a device."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny configs on the CPU: does the script run?")
    parser.add_argument("--models", default="smollm2-135m,llama-1b", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, for MFU")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-length", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args()
    if args.cpu_smoke:
        device, shapes = torch.device("cpu"), SMOKE_SHAPES
        args.batch_size, args.prompt_length, args.new_tokens, args.repeats = 4, 8, 8, 1
        args.train_batch, args.train_length, args.train_steps = 2, 32, 1
        peak = args.peak_tflops
    elif not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine, or pass --cpu-smoke to check the script on tiny CPU "
              "models", file=sys.stderr)
        return 2
    else:
        device, shapes = torch.device("cuda"), SHAPES
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or next((tf for gpu, tf in PEAK_BF16_TFLOPS.items() if gpu in name), None)
        print(f"device: {name}, bf16 peak {peak or 'unknown (pass --peak-tflops)'} TFLOP/s, torch {torch.__version__}")
    failures: list[str] = []
    for key in args.models.split(","):
        model = random_model(shapes[key], device)
        size = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"=== {key}: {size:.1f}M parameters, random init, bf16, {device}", flush=True)
        run_check(f"{key} generation", lambda: check_generation(model, args, device), failures)
        run_check(f"{key} lora step", lambda: check_lora_step(model, args, device, peak), failures)
        run_check(f"{key} mod k=2", lambda: check_mod(model, args, device), failures)
        run_check(f"{key} soups mixing", lambda: check_soups(model, args, device), failures)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"checks failed: {', '.join(failures)}" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
