"""Where the time of one PPO iteration goes on the embedded default model: generation, scoring,
policy log-probs and values, reference log-probs, optimisation.

A real ``PPOTrainer`` (LoRA policy with a value head, the ``relevance`` and ``conciseness`` objectives)
runs ``--iterations`` iterations after one warm-up; each phase's seconds are summed over them. The
phases come from the experience maker's own clock (``ExperienceMaker.last_timings``) and a timer
around the PPO update, so they are the same phases ``metrics.jsonl`` logs as ``seconds/<phase>``.

    python benchmarks/rl_step.py [--prompts 8] [--new-tokens 48] [--iterations 2]

Ends with ``RATIO <phase>_share=<fraction of the iteration>`` per phase, largest first.

Measured with the defaults on the shared 2-core CPU while it was fairly quiet (load ~3): 7.6 s per
iteration; generation 4.57 s (60%), optimization 1.80 s (24%), policy log-probs + values 0.61 s (8%),
reference log-probs 0.59 s (8%), scoring 0.05 s (1%). Under heavy load (~12) the same run took 561 s per
iteration with generation at 76%: decoding token by token suffers most from a busy machine.
Generation is the next optimisation target (e.g. a vLLM backend or a larger decode batch).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from paretoalign.data import load_prompts  # noqa: E402
from paretoalign.training.rl.ppo import PPOConfig, PPOTrainer  # noqa: E402


def time_iteration(trainer: PPOTrainer, prompts: list[str]) -> dict[str, float]:
    """Seconds of each phase of one PPO iteration on ``prompts``."""
    experience = trainer.make_experience(prompts)
    started = time.perf_counter()
    trainer.optimize(experience)
    return {**trainer.maker.last_timings, "optimization": time.perf_counter() - started}


def main() -> None:
    """Build a PPO trainer on the default model, warm up, time iterations, print the table and shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--minibatch-size", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations after one warm-up")
    parser.add_argument("--mixed-precision", default="bf16", help="no or bf16 (default)")
    args = parser.parse_args()

    prompts = [record.prompt for record in load_prompts("instructions", "train")]
    with tempfile.TemporaryDirectory() as out:
        config = PPOConfig(objectives="relevance,conciseness", output_dir=out, overwrite=True, progress=False,
                           batch_size=args.prompts, max_new_tokens=args.new_tokens, minibatch_size=args.minibatch_size,
                           norm_prompts=args.prompts, mixed_precision=args.mixed_precision)
        trainer = PPOTrainer(config, [{"prompt": p} for p in prompts[: args.prompts * (args.iterations + 1)]])
        trainer.start_run()
        time_iteration(trainer, prompts[: args.prompts])
        totals: dict[str, float] = {}
        for index in range(1, args.iterations + 1):
            for phase, seconds in time_iteration(trainer, prompts[index * args.prompts : (index + 1) * args.prompts]).items():
                totals[phase] = totals.get(phase, 0.0) + seconds

    whole = sum(totals.values())
    print(f"prompts={args.prompts} new_tokens={args.new_tokens} minibatch={args.minibatch_size} "
          f"mixed_precision={args.mixed_precision} iterations={args.iterations}")
    print(f"{'phase':<20} {'seconds/iter':>12} {'share':>7}")
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    for phase, seconds in ranked:
        print(f"{phase:<20} {seconds / args.iterations:>12.2f} {seconds / whole:>7.1%}")
    print(f"{'total':<20} {whole / args.iterations:>12.2f}")
    for phase, seconds in ranked:
        print(f"RATIO {phase}_share={seconds / whole:.3f}")


if __name__ == "__main__":
    main()
