"""A reward model learns the friendliness objective from pairs it labelled: held-out pair accuracy.

On the embedded default model (SmolLM2-135M-Instruct), all on CPU, offline:

1. For each instruction prompt, sample four responses in one batched call: two under a friendly system
   prompt and two under an unfriendly one (``FRIENDLY`` / ``UNFRIENDLY`` below), so the samples differ
   clearly in tone. The ``friendliness`` objective (VADER compound sentiment) then decides which is
   chosen; the system prompt is not part of the pair and the reward model never sees it. Only pairs
   whose friendliness differs by at least ``--min-margin`` are kept. Train pairs are every such pair
   among a train-split prompt's samples; held-out pairs are the best vs the worst sample of each
   eval-split prompt, labelled and filtered the same way (the split is by prompt, never by pair).
   The pairs are cached as JSONL (``--pairs-cache``) so later runs do not sample again.
2. Train a Bradley-Terry reward model (LoRA on the default model with a fresh score head) with
   ``run_training("reward-model", ...)``.
3. Load the saved model as an objective and count the held-out pairs it orders like friendliness does.

Run: ``python examples/reward_model_friendliness.py`` (see ``--help``). Ends with
``RESULT reward_model_heldout_accuracy=<x>``; issue 4 asks for >= 0.8. Measured with the defaults
(margin 0.5, seed 0) on the shared 2-core CPU: 874 train pairs from 292 of the 364 train prompts,
64 held-out pairs from the 85 eval prompts, 110 steps: 0.922 (0.936 on the 47 held-out pairs whose
friendliness differs by >= 0.8); 7 min sampling, 8 min training.
What did not reach 0.8: one friendly and one unfriendly sample per prompt with no margin (349 pairs,
0.667: most pairs differ by a few hundredths of VADER score); every clear pair from only 120 train
prompts (294 pairs, 0.786 after 1 epoch).
``--threads 1`` (the default) is much faster when another process keeps a core busy (measured: a
2-thread decoding step of this model took 40x longer than a 1-thread one while the second core was taken).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from paretoalign.data import PreferencePair, load_prompts, read_jsonl, write_jsonl  # noqa: E402
from paretoalign.generation import GenerationConfig  # noqa: E402
from paretoalign.methods.common.pairs import objective_pairs  # noqa: E402
from paretoalign.models import cache_dir, load_model  # noqa: E402
from paretoalign.objectives import load_objectives  # noqa: E402
from paretoalign.training import RewardModelConfig, TrainResult, as_objective, run_training  # noqa: E402

FRIENDLY = "You are a warm, cheerful and kind assistant. Answer in a friendly, encouraging and positive tone."
UNFRIENDLY = "You are a rude, grumpy and sarcastic assistant. Answer in an unfriendly, dismissive and negative tone."
CLEAR_MARGIN = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-prompts", type=int, default=0, help="train-split prompts to label (0 = all)")
    parser.add_argument("--eval-prompts", type=int, default=0, help="eval-split prompts for held-out pairs (0 = all)")
    parser.add_argument("--samples", type=int, default=2, help="responses per prompt under each system prompt")
    parser.add_argument("--min-margin", type=float, default=0.5, help="smallest friendliness gap of a kept pair")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per sampled response")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the train pairs")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (LoRA + score head)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=192, help="tokens per (prompt, response) sequence")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--output-dir", default=None, help="run directory (default: a temporary folder)")
    parser.add_argument("--pairs-cache", default=str(cache_dir() / "examples"),
                        help="folder caching the labelled pairs across runs ('' = no cache)")
    return parser.parse_args(argv)


def label_pairs(splits: list[list[str]], args: argparse.Namespace) -> list[list[PreferencePair]]:
    """Friendliness-labelled pairs for each list of prompts: every clear pair for the first (training),
    best vs worst per prompt for the others (held-out), from the same friendly/unfriendly sampling."""
    paths = [_cache_path(prompts, "all" if i == 0 else "best_worst", args) for i, prompts in enumerate(splits)]
    if all(path is not None and path.exists() for path in paths):
        return [read_jsonl(path, PreferencePair) for path in paths]
    model, tokenizer = load_model(None, dtype="bfloat16", device="cpu")
    (friendliness,) = load_objectives("friendliness")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              seed=args.seed, batch_size=32)
    systems = [FRIENDLY] * args.samples + [UNFRIENDLY] * args.samples
    labelled = []
    for i, (prompts, path) in enumerate(zip(splits, paths)):
        pairs = objective_pairs(model, tokenizer, prompts, friendliness, samples=len(systems), config=config,
                                system_prompt=systems, pairing="all" if i == 0 else "best_worst",
                                min_margin=args.min_margin)
        if path is not None:
            write_jsonl(path, pairs)
        labelled.append(pairs)
    return labelled


def _cache_path(prompts: list[str], pairing: str, args: argparse.Namespace) -> Path | None:
    """Where the pairs of these prompts under these sampling settings are cached (None: caching off)."""
    if not args.pairs_cache:
        return None
    settings = [prompts, pairing, args.samples, args.min_margin, args.max_new_tokens, args.temperature, args.seed,
                FRIENDLY, UNFRIENDLY]
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    return Path(args.pairs_cache) / f"friendliness-pairs-{key}.jsonl"


def train_reward_model(train_pairs: list[PreferencePair], eval_pairs: list[PreferencePair],
                       args: argparse.Namespace, output_dir: Path) -> TrainResult:
    """Bradley-Terry reward model: LoRA + score head on the default model, bfloat16 weights (fastest on CPU)."""
    config = RewardModelConfig(
        output_dir=str(output_dir), overwrite=True, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        max_length=args.max_length, dtype="bfloat16", warmup_steps=2, seed=args.seed, progress=False,
    )
    return run_training("reward-model", config, train_data=train_pairs, eval_data=eval_pairs)


def pair_correct(model_dir: Path, pairs: list[PreferencePair]) -> np.ndarray:
    """Per pair, whether the trained reward model, loaded as an objective, scores chosen above rejected."""
    reward = as_objective(model_dir, "friendliness_rm", device="cpu", dtype="float32")
    prompts = [pair.prompt for pair in pairs]
    chosen = reward.score(prompts, [pair.chosen for pair in pairs])
    rejected = reward.score(prompts, [pair.rejected for pair in pairs])
    return chosen > rejected


def head(records: list, count: int) -> list:
    return records if count <= 0 else records[:count]


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="rm-friendliness-"))
    clock = time.perf_counter()
    train_prompts = [r.prompt for r in head(load_prompts("instructions", "train"), args.train_prompts)]
    eval_prompts = [r.prompt for r in head(load_prompts("instructions", "eval"), args.eval_prompts)]
    train_pairs, eval_pairs = label_pairs([train_prompts, eval_prompts], args)
    train_sources = len({pair.prompt for pair in train_pairs})
    labelled = time.perf_counter()
    result = train_reward_model(train_pairs, eval_pairs, args, output_dir)
    trained = time.perf_counter()
    correct = pair_correct(result.model_dir, eval_pairs)
    clear = np.asarray([pair.margin >= CLEAR_MARGIN for pair in eval_pairs])
    accuracy = float(correct.mean())
    done = time.perf_counter()
    rows = [
        (f"train pairs, every gap >= {args.min_margin}", f"{len(train_pairs)} from {train_sources} of "
                                                          f"{len(train_prompts)} train prompts"),
        (f"held-out pairs, best vs worst, gap >= {args.min_margin}", f"{len(eval_pairs)} from "
                                                                      f"{len(eval_prompts)} eval prompts"),
        ("median friendliness margin, train / held-out",
         f"{np.median([p.margin for p in train_pairs]):.3f} / {np.median([p.margin for p in eval_pairs]):.3f}"),
        ("optimizer steps", f"{result.steps}"),
        ("truncated sequences", f"{result.data.truncated}"),
        ("final train-loop eval loss", f"{result.metrics.get('eval_loss', float('nan')):.3f}"),
        ("held-out accuracy (saved model as objective)", f"{accuracy:.3f}"),
        (f"  on clear pairs, margin >= {CLEAR_MARGIN} ({clear.sum()})", f"{correct[clear].mean():.3f}"),
        ("time: labelling / training / scoring (s)",
         f"{labelled - clock:.0f} / {trained - labelled:.0f} / {done - trained:.0f}"),
        ("run directory", str(output_dir)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"RESULT reward_model_heldout_accuracy={accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
