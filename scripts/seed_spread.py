"""Spread of a sweep's figures over sampling seeds: HV, MIP and steerability of each method in several sweeps,
all rescored on the first sweep's normalization so the hypervolumes are comparable.

Each ``results.json`` keeps every grid point's mean raw score per objective; this rescales them with the first
sweep's mean/std and recomputes the front's hypervolume (reference point −1 per objective), MIP and per-objective
steerability, then prints one row per method and seed and the mean ± standard deviation over the seeds.

Run: ``python scripts/seed_spread.py runs/demo/results.json runs/demo-seed1/results.json ...``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.evaluation.front import DEFAULT_REFERENCE_VALUE, hypervolume, mip
from paretoalign.evaluation.steerability import steerability
from paretoalign.objectives import apply_stats, load_objectives


def rescored(method: Mapping[str, Any], scale: Mapping[str, Mapping[str, float]], names: list[str]) -> dict:
    """HV, MIP and per-objective Spearman of one method's points on the given normalization."""
    objectives = load_objectives(",".join(names))
    apply_stats(objectives, scale)
    columns = [objective.normalize([p["raw"][objective.name] for p in method["points"]]) for objective in objectives]
    rewards = np.column_stack(columns).tolist()
    weights = [[p["weights"].get(n, 0.0) for n in names] for p in method["points"]]
    points = [{"weights": p["weights"], "rewards": dict(zip(names, row))} for p, row in zip(method["points"], rewards)]
    steer = steerability(points, names)
    return {"hv": hypervolume(rewards, [DEFAULT_REFERENCE_VALUE] * len(names)), "mip": mip(weights, rewards),
            **{name: steer[name]["spearman"] for name in names}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json of sweeps that differ by --seed")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.results if not path.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]} does not exist; run the sweep first (paretoalign eval ... --seed N)")
    sweeps = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    names, scale = sweeps[0]["objectives"], sweeps[0]["normalization"]
    rows: dict[str, list[dict]] = {}
    print(f"{'method':<12} {'sweep':<32} {'HV':>6} {'MIP':>6} " + " ".join(f"{n[:12]:>12}" for n in names))
    for path, sweep in zip(args.results, sweeps):
        for name, method in sweep["methods"].items():
            row = rescored(method, scale, names)
            rows.setdefault(name, []).append(row)
            steer = " ".join("           -" if row[n] is None else f"{row[n]:>12.2f}" for n in names)
            print(f"{name:<12} {str(path.parent.name):<32} {row['hv']:>6.2f} {row['mip']:>6.2f} {steer}")
    for name, found in rows.items():
        hv = np.array([row["hv"] for row in found])
        spread = f"{hv.std(ddof=1):.2f}" if hv.size > 1 else "-"
        print(f"SPREAD {name}: HV {hv.mean():.2f} ± {spread} over {hv.size} sweeps")


if __name__ == "__main__":
    main()
