"""Regenerate a results table in README.md from a sweep's ``results.json``.

The README keeps each measured table between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``;
this script replaces what is between them with the sweep's summary table (the one ``paretoalign demo`` and
``paretoalign eval`` print) followed by each method's per-objective steerability, so the figures in the
README are the ones a run printed, never typed by hand.

Run: ``python scripts/readme_results.py runs/demo/results.json --name demo`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paretoalign.core.files import write_text_atomic
from paretoalign.evaluation.campaign import summary_table

ROOT = Path(__file__).resolve().parent.parent


def steerability_lines(results: Mapping[str, Any]) -> list[str]:
    """One line per method: the Spearman steerability and wrong-way steps of each objective."""
    lines = []
    for name, method in results["methods"].items():
        per_objective = method.get("steerability") or {}
        parts = [f"{objective} {item['spearman']:+.2f} ({item['wrong_steps']} wrong steps)"
                 for objective, item in per_objective.items() if item.get("spearman") is not None]
        if parts:
            lines.append(f"{name:<12} steerability: " + "; ".join(parts))
    return lines


def results_block(results: Mapping[str, Any], source: str) -> str:
    """The fenced table that goes between the markers, with where it came from."""
    preset = results.get("preset") or {}
    setting = ", ".join(f"{key} {preset[key]}" for key in ("eval_prompts", "samples_per_prompt", "max_new_tokens",
                                                           "points_per_axis", "budget") if key in preset)
    body = "\n".join([summary_table(results), *steerability_lines(results)])
    return f"```\n{body}\n```\n_{source}: {', '.join(results['objectives'])}; {setting}._\n"


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the part between the markers of ``name`` replaced by ``block``."""
    pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- /results:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: README has no '<!-- results:{name} -->' ... '<!-- /results:{name} -->' markers; "
                         "add them where the table belongs")
    return pattern.sub(lambda match: match.group(1) + block + match.group(2), text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a sweep's results.json (e.g. runs/demo/results.json)")
    parser.add_argument("--name", default="demo", help="which marked table in the README to replace")
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help="the README to update")
    args = parser.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; run the sweep first (e.g. make demo)")
    results = json.loads(path.read_text(encoding="utf-8"))
    readme = Path(args.readme)
    updated = replace_block(readme.read_text(encoding="utf-8"), args.name, results_block(results, f"from {path}"))
    write_text_atomic(readme, updated)
    print(f"updated the '{args.name}' table in {readme}")


if __name__ == "__main__":
    main()
