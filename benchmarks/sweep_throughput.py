"""Wall time of the quick demo's Pareto sweep run point by point against batched across the grid, same answers.

The quick preset (``campaign.PRESETS["quick"]``: its eval prompts of the default prompt set, its grid points
over simplicity and informativeness, its new tokens, T=0.7, its batch size, seed 0) on the embedded default model,
for ``prompting``, ``soups`` and ``mod``. Soups and MOD run over two LoRA adapters with the soups recipe's rank and
alpha and random non-zero weights, built here: decoding costs the same as with trained ones. Each method is swept
by ``evaluate`` twice, batched
(one ``generate`` call for every point's rows, split in length-sorted batches) and point by point (the same
policy declared unable to mix preferences, so one call per point), and the answers are compared token by token
(seeds are the same both ways; a row can still differ where its batch's padding changes float rounding).

    python benchmarks/sweep_throughput.py [--threads 2] [--methods prompting,soups,mod] [--batch-size 16]

When the batch size is below the grid's rows, a third sweep runs batched with every row in one batch
(``--wide-batch-size``), to show what that batch size leaves on the table. Ends with ``RATIO
sweep_batched_vs_pointwise=<point-by-point / batched wall time of the sweeps at the preset's batch size>``
(target >= 3), after the same ratio for generation alone and for the wide batch; below target it prints what
bounds it, with one cached decoding step of the model timed at a point's rows and at a batch's.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from paretoalign.core.preference import weight_grid  # noqa: E402
from paretoalign.data import DEFAULT_PROMPT_SET, load_prompts  # noqa: E402
from paretoalign.evaluation.campaign import PRESETS, generation_config  # noqa: E402
from paretoalign.evaluation.sweep import evaluate  # noqa: E402
from paretoalign.generation import BasePolicy  # noqa: E402
from paretoalign.generation.decoding import CausalLMScorer  # noqa: E402
from paretoalign.methods import DEFAULT_OBJECTIVES  # noqa: E402
from paretoalign.methods.common.mod_policy import load_mod_policy  # noqa: E402
from paretoalign.methods.prompting import PromptingPolicy  # noqa: E402
from paretoalign.methods.soups import SoupPolicy  # noqa: E402
from paretoalign.models import attach_lora, load_model, save_adapter  # noqa: E402
from paretoalign.objectives import load_objectives  # noqa: E402
from paretoalign.objectives.normalization import fit_reference_normalization  # noqa: E402

LORA_R, LORA_ALPHA = 16, 32  # the soups recipe's defaults (ObjectivePoliciesConfig)


class Recorded:
    """``policy`` with every answer recorded; ``mixes_preferences`` False makes the sweep go point by point."""

    def __init__(self, policy, mixes_preferences: bool) -> None:
        self.policy, self.mixes_preferences, self.responses = policy, mixes_preferences, []

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def generate(self, prompts, preference, config):
        responses = self.policy.generate(prompts, preference, config)
        self.responses.extend(responses)
        return responses


def random_adapters(objectives: list[str], folder: Path) -> dict[str, Path]:
    """One saved LoRA adapter per objective with random non-zero A and B (decoding costs what a trained one does)."""
    folders = {}
    for index, objective in enumerate(objectives):
        model, _ = load_model(None, dtype="float32", device="cpu")
        peft_model = attach_lora(model, "policy", r=LORA_R, alpha=LORA_ALPHA)
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:  # A keeps its random initialization; B = 0 would be the untrained adapter
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        folders[objective] = save_adapter(peft_model, "policy", folder / objective)
    return folders


def trained_like(method: str, objectives: list[str], folder: Path, dtype: str):
    """Rewarded Soups or MOD over random adapters, loaded as a run's are."""
    folders = random_adapters(objectives, folder / method)
    if method == "mod":
        return load_mod_policy(adapters=folders, dtype=dtype)
    base, tokenizer = load_model(None, dtype=dtype)
    return SoupPolicy(base, tokenizer, folders)


def decode_step_ms(model, rows: int, context: int = 100, steps: int = 9) -> float:
    """Median wall time of one decoding step of our loop's scorer (``CausalLMScorer``) for ``rows`` rows after
    ``context`` prompt tokens."""
    generator = torch.Generator().manual_seed(0)
    scorer = CausalLMScorer(model, max_new_tokens=steps + 1)
    times = []
    with torch.inference_mode():
        scorer.start(torch.randint(0, 1000, (rows, context), generator=generator),
                     torch.ones(rows, context, dtype=torch.long))
        for _ in range(steps):
            start = time.perf_counter()
            scorer.extend(torch.randint(0, 1000, (rows,), generator=generator))
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[steps // 2]


def sweep(policy, mixes: bool, objectives, prompts, grid, config):
    """(wall seconds of the whole sweep, seconds of generation, token ids of every answer)."""
    recorded = Recorded(policy, mixes)
    start = time.perf_counter()
    result = evaluate(recorded, objectives, prompts, grid, 1, config, progress=False)
    wall = time.perf_counter() - start
    return wall, sum(point.seconds for point in result.points), [r.token_ids for r in recorded.responses], result


def measures(result) -> list[dict]:
    """Each point's results.json entry but wall time and KL (a log-probability rounds with its batch's padding)."""
    return [{k: v for k, v in point.to_dict().items() if k not in ("seconds", "kl", "kl_stderr")}
            for point in result.points]


def main() -> None:
    preset = PRESETS["quick"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", default="prompting,soups,mod", help="from prompting, soups, mod")
    parser.add_argument("--batch-size", type=int, default=preset.batch_size)
    parser.add_argument("--wide-batch-size", type=int, default=None,
                        help="also sweep batched with this batch size (default: every row of the grid when --batch-size "
                             "is smaller; 0: skip)")
    parser.add_argument("--prompts", type=int, default=preset.eval_prompts)
    parser.add_argument("--points", type=int, default=preset.points_per_axis)
    parser.add_argument("--max-new-tokens", type=int, default=preset.max_new_tokens)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    preset = replace(preset, batch_size=args.batch_size, eval_prompts=args.prompts, points_per_axis=args.points,
                     max_new_tokens=args.max_new_tokens)
    config = generation_config(preset, seed=0)
    prompts = [record.prompt for record in load_prompts(DEFAULT_PROMPT_SET, "eval")][: preset.eval_prompts]
    objectives = load_objectives(DEFAULT_OBJECTIVES)
    grid = weight_grid([o.name for o in objectives], preset.points_per_axis)
    rows = len(prompts) * len(grid)
    wide = (rows if config.batch_size < rows else 0) if args.wide_batch_size is None else args.wide_batch_size
    modes = {"point by point": (False, config), "batched": (True, config)}
    if wide:
        modes[f"batched x{wide}"] = (True, replace(config, batch_size=wide))
    model, tokenizer = load_model(None, dtype=args.dtype)
    fit_reference_normalization(objectives, BasePolicy(model, tokenizer), prompts, config)
    print(f"quick sweep: {len(prompts)} prompts x {len(grid)} points, {config.max_new_tokens} new tokens, "
          f"batch {config.batch_size}, {model.dtype}, threads={torch.get_num_threads()}")

    totals = {mode: [0.0, 0.0] for mode in modes}
    identical = True
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods.split(","):
            if method == "prompting":
                policy = PromptingPolicy(model, tokenizer, objectives=[o.name for o in objectives])
            else:
                policy = trained_like(method, [o.name for o in objectives], Path(scratch), args.dtype)
            policy.generate(prompts[:2], grid[len(grid) // 2], replace(config, max_new_tokens=2))  # warm-up
            runs = {mode: sweep(policy, mixes, objectives, prompts, grid, mode_config)
                    for mode, (mixes, mode_config) in modes.items()}
            alone = runs["point by point"]
            for mode, (wall, generation, answers, result) in runs.items():
                same = sum(a == b for a, b in zip(answers, alone[2]))
                identical &= same == len(alone[2]) and measures(result) == measures(alone[3])
                print(f"{method:<10} {mode:<15} {wall:7.1f} s, generation {generation:6.1f} s, "
                      f"{sum(len(ids) for ids in answers)} tokens, answers identical to point by point "
                      f"{same}/{len(alone[2])}", flush=True)
                totals[mode][0] += wall
                totals[mode][1] += generation

    calls = len(grid) * math.ceil(len(prompts) / config.batch_size)
    batches = math.ceil(rows / config.batch_size)
    print(f"decoding batches: {calls} point by point (<= {min(len(prompts), config.batch_size)} rows each), "
          f"{batches} batched (<= {config.batch_size} rows each)")
    ratio = totals["point by point"][0] / totals["batched"][0]
    print(f"answers {'identical' if identical else 'NOT all identical'} point by point and batched" + (
        "" if identical else ": a differing row has the same seed both ways (sequence_seeds per preference); its "
        "batch's padding and shape change the float rounding of the logits, which can flip a sampled token"))
    if wide:
        wide_ratio = totals["point by point"][0] / totals[f"batched x{wide}"][0]
        print(f"RATIO sweep_batched_x{wide}_vs_pointwise={wide_ratio:.2f}")
    print(f"RATIO sweep_generation_batched_vs_pointwise={totals['point by point'][1] / totals['batched'][1]:.2f}")
    if ratio < 3:
        point_rows, batch_rows = min(len(prompts), config.batch_size), min(rows, config.batch_size)
        small, large = decode_step_ms(model, point_rows), decode_step_ms(model, batch_rows)
        print(f"below target: at batch size {config.batch_size} batching cuts the decoding batches "
              f"{calls / batches:.2f}x, which bounds the gain if a step cost the same at any row count; on this "
              f"CPU one cached decoding step takes {small:.0f} ms at {point_rows} rows and {large:.0f} ms at "
              f"{batch_rows} ({large / small:.2f}x the cost for {batch_rows / point_rows:.1f}x the rows), so decoding "
              f"steps gain at most {batch_rows * small / (point_rows * large):.2f}x; prompt prefill, scoring and KL "
              "to the reference are compute-bound and cost the same both ways")
    print(f"RATIO sweep_batched_vs_pointwise={ratio:.2f}")


if __name__ == "__main__":
    main()
