"""report.html: one self-contained page (inline CSS, images as base64 data URIs, no scripts) showing the
fronts, a summary table per method, each method's points, and responses across the preference grid."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.files import write_text_atomic
from .plots import figure_png, front_figure, kl_figure

REPORT_FILE = "report.html"
PROMPTS_SHOWN = 3

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scorers { color: #a40; font-weight: 600; } .meta { color: #555; font-size: 0.9em; }
.response { white-space: pre-wrap; max-width: 420px; font-size: 0.88em; }
img { max-width: 100%; border: 1px solid #eee; } figure { margin: 1em 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _weights_label(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={weight:.2f}" for name, weight in weights.items())


def _image(figure, caption: str) -> str:
    data = base64.b64encode(figure_png(figure)).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _summary_table(results: Mapping[str, Any]) -> str:
    head = ("<tr><th>method</th><th>hypervolume</th><th>MIP</th><th>mean KL</th>"
            "<th>steerability (Spearman; wrong steps)</th><th>cut off</th><th>generated tokens</th>"
            "<th>trained tokens</th><th>seconds</th><th>uses scorers at decode time</th></tr>")
    rows = []
    for name, method in results["methods"].items():
        points = method["points"]
        mean_kl = sum(point["kl"] for point in points) / max(len(points), 1)
        cost = method["cost"]
        scorers = ('<span class="scorers">yes: ranks with the objective scorers</span>'
                   if method.get("uses_scorers_at_decode") else "no")
        steering = "; ".join(
            f"{_e(objective)} {'-' if entry['spearman'] is None else format(entry['spearman'], '.2f')} "
            f"({entry['wrong_steps']}/{entry['steps']})"
            for objective, entry in method.get("steerability", {}).items())
        rows.append(
            f"<tr><td>{_e(name)}</td><td class=num>{method['hypervolume']:.3f}</td>"
            f"<td class=num>{method['mip']:.3f}</td><td class=num>{mean_kl:.3f}</td><td>{steering}</td>"
            f"<td class=num>{100 * method.get('cut_off', 0.0):.0f}%</td>"
            f"<td class=num>{int(cost['generated_tokens'])}</td><td class=num>{int(cost['trained_tokens'])}</td>"
            f"<td class=num>{float(cost['seconds']):.1f}</td><td>{scorers}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _points_table(objectives: Sequence[str], method: Mapping[str, Any]) -> str:
    front = set(method["front"])
    head = ("<tr><th>#</th><th>weights</th>"
            + "".join(f"<th>{_e(name)} (±se)</th>" for name in objectives)
            + "<th>KL</th><th>words</th><th>tokens</th><th>seconds</th><th>constraints</th><th>on front</th></tr>")
    rows = []
    for index, point in enumerate(method["points"]):
        rewards = "".join(
            f"<td class=num>{point['rewards'][name]:+.3f} ± {point.get('stderr', {}).get(name, 0.0):.3f}</td>"
            for name in objectives
        )
        constraints = "; ".join(
            f"{_e(spec)}: mean {info['mean_cost']:.3f}, satisfied {100 * info['satisfied_share']:.0f}%"
            for spec, info in point.get("constraints", {}).items()
        )
        rows.append(
            f"<tr><td>{index}</td><td>{_e(_weights_label(point['weights']))}</td>{rewards}"
            f"<td class=num>{point['kl']:.3f}</td><td class=num>{point['length']:.1f}</td>"
            f"<td class=num>{int(point['tokens'])}</td><td class=num>{point['seconds']:.1f}</td>"
            f"<td>{constraints}</td><td>{'yes' if index in front else ''}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _responses_section(results: Mapping[str, Any]) -> str:
    """For each of the first prompts: one row per preference point, one column per method."""
    methods = results["methods"]
    first = next(iter(methods.values()))
    samples = first["points"][0].get("samples", []) if first["points"] else []
    sections = []
    for number, sample in enumerate(samples[:PROMPTS_SHOWN]):
        head = "<tr><th>weights</th>" + "".join(f"<th>{_e(name)}</th>" for name in methods) + "</tr>"
        rows = []
        for index, point in enumerate(first["points"]):
            cells = []
            for method in methods.values():
                other = method["points"][index]["samples"] if index < len(method["points"]) else []
                text = other[number]["response"] if number < len(other) else ""
                cells.append(f'<td class="response">{_e(text)}</td>')
            rows.append(f"<tr><td>{_e(_weights_label(point['weights']))}</td>{''.join(cells)}</tr>")
        sections.append(f"<h3>Prompt {number + 1}</h3><p><b>{_e(sample['prompt'])}</b></p>"
                        f"<table>{head}{''.join(rows)}</table>")
    return "".join(sections) or "<p>No sample responses were kept.</p>"


def render_report(results: Mapping[str, Any], title: str = "paretoalign evaluation") -> str:
    """The report page as an HTML string; every model-written text is escaped."""
    objectives = results["objectives"]
    reference = ", ".join(f"{name}={value:g}" for name, value in results["reference_point"].items())
    sources = sorted({str(stats.get("source", "")) for stats in results.get("normalization", {}).values()} - {""})
    meta = (f"<p class=meta>Objectives: {_e(', '.join(objectives))}. Rewards are normalized (z-scores against "
            f"the reference model's responses{': ' + _e('; '.join(sources)) if sources else ''}); higher is better. "
            f"Hypervolume reference point: {_e(reference)}. MIP = mean over the grid of ⟨w, r(w)⟩.</p>")
    per_method = "".join(
        f"<h3>{_e(name)}</h3>{_points_table(objectives, method)}" for name, method in results["methods"].items()
    )
    body = (
        f"<h1>{_e(title)}</h1>{meta}<h2>Summary</h2>{_summary_table(results)}"
        f"<h2>Fronts</h2>{_image(front_figure(results), 'Pareto fronts in normalized reward space')}"
        f"{_image(kl_figure(results), 'KL to the reference vs scalarized reward')}"
        f"<h2>Points per method</h2>{per_method}"
        f"<h2>Responses across the preference grid</h2>{_responses_section(results)}"
    )
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_report(results: Mapping[str, Any], path: str | os.PathLike, title: str = "paretoalign evaluation") -> Path:
    """Write the self-contained report page atomically (a directory gets ``report.html`` inside)."""
    target = Path(path)
    if target.is_dir():
        target = target / REPORT_FILE
    return write_text_atomic(target, render_report(results, title))
