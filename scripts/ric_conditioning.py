"""How much a fitted RiC model reads its reward targets, and how far the instructions spread its training data.

1. Log-likelihood of each offline response under its own targets minus under another response's targets, for the
   adapted model and for the base model (adapter off). A model that conditions on the targets gives a response
   more likelihood with the targets it was written for; a gain near zero means the conditioning text is ignored,
   whatever the SFT loss says. The other targets are the response half the data away (a fixed permutation).
2. With base-model samples that record their steering (``samples_from`` runs, or ``--samples``): each objective's
   raw score by the instruction the sample was drawn with, i.e. what the data shows the model of each target.

Run: ``python scripts/ric_conditioning.py runs/demo/methods/ric [--examples 64] [--samples FILE]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from paretoalign.core.rundir import RunDirectory
from paretoalign.data import ScoredResponse, read_jsonl
from paretoalign.generation.kl import sequence_logprobs
from paretoalign.methods import load_run
from paretoalign.methods.common.base_samples import SAMPLES_FILE, STEERED_BY
from paretoalign.methods.common.recipe import run_objectives
from paretoalign.methods.ric.stages import OFFLINE_DATA, REWARDS


def conditioning_gain(policy, records: list[ScoredResponse], model) -> np.ndarray:
    """Per record: log p(response | prompt + own targets) − log p(response | prompt + other record's targets)."""
    names = policy.objectives
    own = [{name: record.meta[REWARDS][name] for name in names} for record in records]
    other = own[len(own) // 2:] + own[: len(own) // 2]
    ids = [policy.tokenizer(record.response, add_special_tokens=False)["input_ids"] for record in records]

    def total(targets: list[dict[str, float]]) -> np.ndarray:
        prompts = [policy.conditioning.condition(record.prompt, row) for record, row in zip(records, targets)]
        return np.array([float(values.sum()) for values in sequence_logprobs(model, policy.tokenizer, prompts, ids)])

    return total(own) - total(other)


def spread_by_instruction(samples: list[ScoredResponse], objectives) -> dict[str, dict[str, tuple[float, float]]]:
    """Instruction (``plain`` or an objective's name) -> objective -> (mean, sd) of the raw scores of its samples."""
    groups: dict[str, list[ScoredResponse]] = {}
    for record in samples:
        groups.setdefault(record.meta.get(STEERED_BY) or "plain", []).append(record)
    spread = {}
    for label, records in groups.items():
        prompts, texts = [r.prompt for r in records], [r.response for r in records]
        spread[label] = {o.name: (float(np.mean(scores)), float(np.std(scores)))
                         for o in objectives for scores in [o.score(prompts, texts)]}
    return spread


def samples_path(run: Path, given: Path | None) -> Path | None:
    """``--samples``, else the samples of the run the RiC run took its data from (``samples_from``)."""
    if given is not None:
        return given
    source = RunDirectory.open(run).fingerprint.get("config", {}).get("samples_from")
    return Path(source) / SAMPLES_FILE if source else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished RiC run directory")
    parser.add_argument("--examples", type=int, default=64, help="offline responses to score (default 64)")
    parser.add_argument("--samples", type=Path, default=None,
                        help="base-model samples with meta.steered_by (default: those of the run's samples_from)")
    args = parser.parse_args(argv)
    if not (args.run / OFFLINE_DATA).is_file():
        raise SystemExit(f"{args.run} has no {OFFLINE_DATA}; give a finished RiC run (paretoalign fit ric ...)")
    policy = load_run(args.run, device="cpu", dtype="float32")
    records = read_jsonl(args.run / OFFLINE_DATA, ScoredResponse)[: args.examples]
    reference, _ = policy.reference()
    for label, model in (("adapted", policy.model), ("base", reference)):
        gain = conditioning_gain(policy, records, model)
        stderr = gain.std(ddof=1) / np.sqrt(len(gain))
        print(f"{label:<8} own-vs-other targets: {gain.mean():+.3f} ± {stderr:.3f} nats per response "
              f"({(gain > 0).mean():.0%} of {len(gain)} responses more likely with their own)")
    source = samples_path(args.run, args.samples)
    if source is None or not source.is_file():
        return
    for label, scores in spread_by_instruction(read_jsonl(source, ScoredResponse), run_objectives(RunDirectory.open(
            args.run))).items():
        print(f"samples steered by {label:<16} " + "; ".join(f"{name} {mean:.1f} ± {sd:.1f}"
                                                              for name, (mean, sd) in scores.items()))


if __name__ == "__main__":
    main()
