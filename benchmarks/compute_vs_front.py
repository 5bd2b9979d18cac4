"""RiC vs Rewarded Soups vs MORLHF: the front each reaches against the compute it took to build.

The RiC paper claims a front as good as MORLHF's with about 10% of its compute (one conditioned model
for every preference instead of one PPO model per preference). This script trains the three recipes
on the embedded default model (``--budget quick`` or ``full``, the demo's sizes), sweeps them and the
base model over one weight grid with one shared normalization (``paretoalign demo`` machinery), and
prints hypervolume, MIP and compute (tokens generated + trained while building the policy, and
training wall time) side by side, whatever they show.

    python benchmarks/compute_vs_front.py [--budget quick] [--out runs/compute_vs_front] [--plot docs/compute_vs_front.png]

Ends with ``RATIO <method>_compute_vs_morlhf=<tokens / MORLHF's tokens>`` and
``RATIO <method>_hv_vs_morlhf=<hypervolume / MORLHF's>`` lines.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from paretoalign.evaluation import load_results  # noqa: E402
from paretoalign.evaluation.campaign import DEFAULT_OBJECTIVES, PRESETS, SweepPlan, run_sweep  # noqa: E402

METHODS = ("base", "ric", "soups", "morlhf")


def compute_rows(results: dict) -> list[dict]:
    """One row per method: hypervolume, MIP, and the tokens and seconds spent building the policy."""
    rows = []
    for name, method in results["methods"].items():
        cost = method["cost"]
        rows.append({
            "method": name,
            "hypervolume": method["hypervolume"],
            "mip": method["mip"],
            "build_tokens": int(cost.get("training_generated_tokens", 0)) + int(cost.get("trained_tokens", 0)),
            "build_seconds": float(cost.get("training_seconds", 0.0)),
        })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<8} {'HV':>7} {'MIP':>7} {'build tokens':>13} {'build s':>9}")
    for row in rows:
        print(f"{row['method']:<8} {row['hypervolume']:>7.3f} {row['mip']:>7.3f} {row['build_tokens']:>13} "
              f"{row['build_seconds']:>9.1f}")


def plot(rows: list[dict], path: Path) -> None:
    """Hypervolume against build tokens, one labelled point per trained method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paretoalign.core.files import atomic_path

    figure, axes = plt.subplots(figsize=(5.5, 4))
    for row in rows:
        if row["build_tokens"]:
            axes.scatter(row["build_tokens"], row["hypervolume"], s=40)
            axes.annotate(row["method"], (row["build_tokens"], row["hypervolume"]), textcoords="offset points",
                          xytext=(6, 4))
    base = [row for row in rows if row["method"] == "base"]
    if base:
        axes.axhline(base[0]["hypervolume"], color="grey", linestyle="--", linewidth=1, label="base model")
        axes.legend(loc="lower right")
    axes.set_xscale("log")
    axes.set_xlabel("compute to build the policy (tokens generated + trained)")
    axes.set_ylabel("hypervolume (normalized rewards)")
    axes.set_title("front quality vs compute")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staged:
        figure.savefig(staged, format="png", dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(PRESETS), default="quick", help="demo preset (default %(default)s)")
    parser.add_argument("--objectives", default=DEFAULT_OBJECTIVES)
    parser.add_argument("--out", default="runs/compute_vs_front", help="run directory (replaced)")
    parser.add_argument("--plot", default=None, help="also write the plot here (e.g. docs/compute_vs_front.png)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    plan = SweepPlan(objectives=args.objectives, methods=list(METHODS), preset=PRESETS[args.budget], seed=args.seed)
    run = run_sweep(plan, args.out, overwrite=True)
    rows = compute_rows(load_results(run.path / "results.json"))
    print_table(rows)
    if args.plot:
        plot(rows, Path(args.plot))
    plot(rows, run.path / "compute_vs_front.png")
    reference = {row["method"]: row for row in rows}["morlhf"]
    for row in rows:
        if row["method"] in ("base", "morlhf"):
            continue
        print(f"RATIO {row['method']}_compute_vs_morlhf={row['build_tokens'] / max(reference['build_tokens'], 1):.3f}")
        print(f"RATIO {row['method']}_hv_vs_morlhf={row['hypervolume'] / max(reference['hypervolume'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
