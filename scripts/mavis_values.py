"""How well a fitted MAVIS run's value models rank what they were trained to predict: Spearman correlation between
each value model's prediction at a tree node and the node's Monte-Carlo value, on the run's own iteration-0 trees
(in sample) and on trees grown the same way from train prompts the run never saw (held out).

MAVIS decodes by tilting π_ref's top-k by β · Σ w_i V_i, so it can steer only as well as V_i orders the candidates:
a held-out correlation near zero means the tilt adds noise, not the objective.

Run: ``python scripts/mavis_values.py runs/quick_mm/methods/mavis [--prompts 8]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.nn.utils.rnn import pad_sequence

from paretoalign.core.rundir import RunDirectory
from paretoalign.generation.chat import pad_id
from paretoalign.methods import get_recipe
from paretoalign.methods.common.objective_policies import train_prompts
from paretoalign.methods.common.recipe import run_objectives
from paretoalign.methods.mavis.recipe import reference_tree_sampler, value_model_folders
from paretoalign.methods.mavis.trees import collect_trees, read_shards, value_records
from paretoalign.methods.mavis.values import load_value_model
from paretoalign.models.score_model import sequence_scores

BATCH = 16


def predictions(model, tokenizer, records: list[dict]) -> np.ndarray:
    """The value model's score of each record's prompt + partial response, in batches (right padding)."""
    values = []
    with torch.inference_mode():
        for start in range(0, len(records), BATCH):
            rows = [torch.tensor(r["input_ids"], dtype=torch.long) for r in records[start : start + BATCH]]
            ids = pad_sequence(rows, batch_first=True, padding_value=pad_id(tokenizer))
            mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
            values.append(sequence_scores(model, ids.to(model.device), mask.to(model.device)).cpu())
    return torch.cat(values).numpy()


def held_out_trees(run: RunDirectory, config, objectives, count: int):
    """Trees grown like the run's iteration 0 (π_ref's top-k) from the ``count`` train prompts after its own."""
    prompts = train_prompts(config.prompts * config.iterations + count)[-count:]
    return collect_trees(reference_tree_sampler(config, device="cpu"), prompts, objectives, config.tree_shape(),
                         seed=config.seed + 1000, shard="held-out")


def value_correlations(run_dir: Path, count: int) -> dict[str, dict[str, float]]:
    """Objective -> {"in_sample", "held_out"}: Spearman of the value model against the Monte-Carlo values."""
    run = RunDirectory.open(run_dir)
    config, objectives = get_recipe("mavis").settings(run), run_objectives(run)
    if config.token_head:
        raise SystemExit(f"{run_dir} has per-token value heads; this script reads exact value models")
    trees = {"in_sample": read_shards([run.path / run.manifest["trees"]["iter0"]["path"]]),
             "held_out": held_out_trees(run, config, objectives, count)}
    result = {}
    for name, folder in value_model_folders(run).items():
        model, tokenizer = load_value_model(folder, device="cpu", dtype="float32")
        result[name] = {}
        for label, table in trees.items():
            records = value_records(table, name)
            targets = np.array([r["target"] for r in records])
            result[name][label] = float(spearmanr(predictions(model, tokenizer, records), targets).statistic)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished MAVIS run directory")
    parser.add_argument("--prompts", type=int, default=8, help="held-out train prompts to grow trees from (default 8)")
    args = parser.parse_args(argv)
    if not (args.run / "manifest.json").is_file():
        raise SystemExit(f"{args.run} is not a run directory; give a finished MAVIS run (paretoalign fit mavis ...)")
    for name, correlations in value_correlations(args.run, args.prompts).items():
        print(f"{name:<16} value model vs Monte-Carlo value, Spearman: in sample {correlations['in_sample']:+.2f}, "
              f"held out {correlations['held_out']:+.2f}")


if __name__ == "__main__":
    main()
