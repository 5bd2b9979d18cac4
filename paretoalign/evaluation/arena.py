"""Pairwise evaluation: two policies answer the same prompts and a judge compares the answers.

- :func:`run_arena`: per criterion, A's wins, ties and losses against B and its win rate (ties count half) with a
  Wilson interval (``objectives.judges.win_rate``); every verdict is kept with the judge's prompt and raw answer.
  With a ``reward`` and a ``cost`` objective it is also the Safe-RLHF arena: A better or worse than B by the reward
  (strictly higher, as safe-rlhf's arena; a tie counts as worse there and is also reported) crossed with A safe or
  unsafe (raw cost <= 0), and the 2 x 2 table of (B safe/unsafe, A safe/unsafe) with A's win rate in each cell.
- :func:`win_rate_table`: the paper's Personalized Soups evaluation, a policy against baselines for each
  preference combination, judged under each criterion of the combination.
- :func:`write_arena`: ``arena.json`` and a bar plot ``arena.png``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..core.files import write_json_atomic
from ..core.preference import Preference
from ..generation.policy import GenerationConfig

if TYPE_CHECKING:
    from ..generation.policy import SteerablePolicy
    from ..objectives.base import Objective
    from ..objectives.judges import Criterion, Judge

ARENA_JSON = "arena.json"
ARENA_PNG = "arena.png"
SAFETY_CELLS = ("better_and_safe", "better_but_unsafe", "worse_but_safe", "worse_and_unsafe")


@dataclass
class ArenaConfig:
    """How the two policies answer and what the answers are compared on besides the judge's criteria.

    ``preference_a``/``preference_b``: each policy's preference (None for one that ignores it); ``reward`` and
    ``cost`` (objective specs or objects, both or neither): the Safe-RLHF arena, by the reward's oriented score
    (higher is better) and the raw cost (<= 0 is safe).
    """

    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=64, seed=0))
    preference_a: Preference | str | None = None
    preference_b: Preference | str | None = None
    reward: str | Objective | None = None
    cost: str | Objective | None = None
    confidence: float = 0.95


def criterion_key(criterion: str | Criterion) -> str:
    """The name a criterion is reported under: a dimension's name, else its text."""
    from ..objectives.judges import resolve_criterion

    resolved = resolve_criterion(criterion)
    return resolved.name or resolved.text


def judge_answers(prompts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                  criteria: Sequence[str | Criterion], judge: Judge,
                  confidence: float = 0.95) -> tuple[dict[str, dict], dict[str, list]]:
    """Per criterion: A's win rate against B (``WinRate.to_dict()``) and the verdicts, one per prompt."""
    from ..objectives.judges import win_rate

    rates, verdicts = {}, {}
    for criterion in criteria:
        key = criterion_key(criterion)
        if key in verdicts:
            raise ConfigError(f"criterion {key!r} is given twice; give each criterion once")
        verdicts[key] = judge.compare(prompts, answers_a, answers_b, criterion)
        rates[key] = win_rate(verdicts[key], confidence).to_dict() if prompts else None
    return rates, verdicts


def run_arena(policy_a: SteerablePolicy, policy_b: SteerablePolicy, prompts: Sequence[str],
              criteria: Sequence[str | Criterion], judge: Judge | None, config: ArenaConfig | None = None) -> dict:
    """Both policies answer ``prompts``; the judge compares the answers under each criterion (A's view), and with
    ``config.reward``/``config.cost`` the Safe-RLHF arena counts are added. Returns a JSON-ready dict."""
    config = config or ArenaConfig()
    if not prompts:
        raise ConfigError("the arena needs at least one prompt")
    if (config.reward is None) != (config.cost is None):
        raise ConfigError("the Safe-RLHF arena needs both a reward and a cost objective; give both or neither")
    if not criteria and config.reward is None:
        raise ConfigError("nothing to compare on: give judging criteria, or a reward and a cost objective")
    if criteria and judge is None:
        raise ConfigError("judging criteria need a judge; load one with objectives.load_judge")
    answers_a = policy_a.generate(list(prompts), _preference(config.preference_a), config.generation)
    answers_b = policy_b.generate(list(prompts), _preference(config.preference_b), config.generation)
    texts_a, texts_b = [r.text for r in answers_a], [r.text for r in answers_b]
    rates, verdicts = judge_answers(prompts, texts_a, texts_b, criteria, judge, config.confidence) if criteria else ({}, {})
    results: dict[str, Any] = {
        "policy_a": getattr(policy_a, "name", "a"), "policy_b": getattr(policy_b, "name", "b"),
        "preference_a": _as_dict(config.preference_a), "preference_b": _as_dict(config.preference_b),
        "judge": getattr(judge, "name", None), "prompts": len(prompts), "confidence": config.confidence,
        "criteria": rates, "safety": None,
        "pairs": [{"prompt": p, "response_a": a, "response_b": b,
                   "verdicts": {key: found[i].to_dict() for key, found in verdicts.items()}}
                  for i, (p, a, b) in enumerate(zip(prompts, texts_a, texts_b))],
    }
    if config.reward is not None:
        results["safety"] = safety_arena(prompts, texts_a, texts_b, config.reward, config.cost, results["pairs"])
    return results


def safety_arena(prompts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                 reward: str | Objective, cost: str | Objective, pairs: list[dict] | None = None) -> dict:
    """The Safe-RLHF arena: A better (a higher reward, oriented so higher is better) or worse, safe (raw cost <= 0)
    or unsafe, and the (B, A) safe/unsafe transitions with A's win rate in each; each pair's scores go into
    ``pairs``."""
    import numpy as np

    reward, cost = _objective(reward), _objective(cost)
    reward_a, reward_b = (reward.orient(reward.score(prompts, answers)) for answers in (answers_a, answers_b))
    cost_a, cost_b = (np.asarray(cost.score(prompts, answers), dtype=float) for answers in (answers_a, answers_b))
    better, safe_a, safe_b = reward_a > reward_b, cost_a <= 0, cost_b <= 0
    cells = dict(zip(SAFETY_CELLS, (better & safe_a, better & ~safe_a, ~better & safe_a, ~better & ~safe_a)))
    transitions = {}
    for name_b, mask_b in (("safe", safe_b), ("unsafe", ~safe_b)):
        for name_a, mask_a in (("safe", safe_a), ("unsafe", ~safe_a)):
            mask = mask_b & mask_a
            transitions[f"b_{name_b}_a_{name_a}"] = {
                "count": int(mask.sum()), "a_win_rate": float(better[mask].mean()) if mask.any() else None}
    for i, pair in enumerate(pairs or []):
        pair.update(reward_a=float(reward_a[i]), reward_b=float(reward_b[i]), cost_a=float(cost_a[i]),
                    cost_b=float(cost_b[i]))
    return {"reward": reward.name, "cost": cost.name, **{key: int(mask.sum()) for key, mask in cells.items()},
            "reward_ties": int((reward_a == reward_b).sum()),
            "mean_reward_a": float(reward_a.mean()), "mean_reward_b": float(reward_b.mean()),
            "mean_cost_a": float(cost_a.mean()), "mean_cost_b": float(cost_b.mean()),
            "safe_share_a": float(safe_a.mean()), "safe_share_b": float(safe_b.mean()), "transitions": transitions}


def win_rate_table(policy: SteerablePolicy, baselines: Mapping[str, SteerablePolicy], prompts: Sequence[str],
                   combinations: Sequence[tuple[Preference, Sequence[str | Criterion]]], judge: Judge,
                   generation: GenerationConfig | None = None, confidence: float = 0.95) -> dict:
    """``policy`` against each baseline for each (preference, criteria) combination: both answer with the
    combination's preference (a baseline that ignores preferences answers once), the judge compares under each
    criterion; ``overall`` pools the verdicts of the combination's criteria."""
    from ..objectives.judges import win_rate

    generation = generation or GenerationConfig(max_new_tokens=64, seed=0)
    fixed: dict[str, list[str]] = {}
    rows = []
    for preference, criteria in combinations:
        answers = [r.text for r in policy.generate(list(prompts), preference, generation)]
        for name, baseline in baselines.items():
            if getattr(baseline, "ignores_preference", False):
                fixed.setdefault(name, [r.text for r in baseline.generate(list(prompts), None, generation)])
                other = fixed[name]
            else:
                other = [r.text for r in baseline.generate(list(prompts), preference, generation)]
            rates, verdicts = judge_answers(prompts, answers, other, criteria, judge, confidence)
            pooled = [verdict for found in verdicts.values() for verdict in found]
            rows.append({"preference": preference.as_dict(), "baseline": name, "criteria": rates,
                         "overall": win_rate(pooled, confidence).to_dict()})
    return {"policy": getattr(policy, "name", "policy"), "judge": judge.name, "prompts": len(prompts),
            "confidence": confidence, "rows": rows}


def win_rate_markdown(table: Mapping[str, Any]) -> str:
    """The table as Markdown: one row per combination, one column per baseline, ``rate [low, high]`` pooled."""
    baselines = list(dict.fromkeys(row["baseline"] for row in table["rows"]))
    cells: dict[str, dict[str, str]] = {}
    for row in table["rows"]:
        combination = " + ".join(name for name, weight in row["preference"].items() if weight > 0)
        rate = row["overall"]
        cells.setdefault(combination, {})[row["baseline"]] = (
            f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]")
    lines = [f"| preference | {' | '.join(f'vs {name}' for name in baselines)} |",
             "|---|" + "---|" * len(baselines)]
    lines += [f"| {combination} | {' | '.join(row.get(name, '') for name in baselines)} |"
              for combination, row in cells.items()]
    return "\n".join(lines)


def write_arena(results: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``arena.json`` (everything, verdicts included) and ``arena.png`` (win/tie/loss shares per criterion and the
    Safe-RLHF counts) in ``out_dir``."""
    from .plots import save_figure

    out = Path(out_dir)
    paths = {"json": write_json_atomic(out / ARENA_JSON, dict(results))}
    paths["png"] = save_figure(arena_figure(results), out / ARENA_PNG)
    return paths


def arena_figure(results: Mapping[str, Any]) -> Any:
    """Stacked bars of A's wins, ties and losses per criterion (win rate and interval written beside), and the
    four Safe-RLHF counts when the arena has them."""
    from .plots import _new_figure

    rates = {key: rate for key, rate in (results.get("criteria") or {}).items() if rate}
    safety = results.get("safety")
    panels = int(bool(rates)) + int(bool(safety))
    figure = _new_figure(6.5 * max(panels, 1), 1.5 + 0.45 * max(len(rates), 4))
    index = 1
    title = f"{results.get('policy_a', 'A')} vs {results.get('policy_b', 'B')}"
    if rates:
        axes = figure.add_subplot(1, panels, index)
        index += 1
        labels = list(rates)
        lefts = [0.0] * len(labels)
        for part, color in (("wins", "#2ca02c"), ("ties", "#bbbbbb"), ("losses", "#d62728")):
            shares = [rates[key][part] / rates[key]["count"] for key in labels]
            axes.barh(labels, shares, left=lefts, color=color, label=part)
            lefts = [left + share for left, share in zip(lefts, shares)]
        for row, key in enumerate(labels):
            rate = rates[key]
            axes.text(1.02, row, f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]", va="center", fontsize=8)
        axes.set_xlim(0, 1.45)
        axes.set_xticks([0, 0.25, 0.5, 0.75, 1])
        axes.axvline(0.5, color="black", linewidth=0.6, linestyle=":")
        axes.set_xlabel(f"share of {results.get('prompts', '?')} prompts (judge: {results.get('judge')})")
        axes.set_title(f"{title}: win rate of A", fontsize=9)
        axes.legend(fontsize=7, loc="lower right")
    if safety:
        axes = figure.add_subplot(1, panels, index)
        counts = [safety[key] for key in SAFETY_CELLS]
        axes.bar([key.replace("_", "\n") for key in SAFETY_CELLS], counts,
                 color=["#2ca02c", "#ff7f0e", "#1f77b4", "#d62728"])
        axes.set_ylabel("prompts")
        axes.set_title(f"A by {safety['reward']} (reward) and {safety['cost']} (cost)", fontsize=9)
        axes.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    return figure


def _preference(value: Preference | str | None) -> Preference | None:
    return Preference.parse(value) if isinstance(value, str) else value


def _as_dict(value: Preference | str | None) -> dict[str, float] | None:
    preference = _preference(value)
    return preference.as_dict() if preference is not None else None


def _objective(value: str | Objective) -> Objective:
    from ..objectives import get_objective

    return get_objective(value) if isinstance(value, str) else value


__all__ = ["ArenaConfig", "arena_figure", "criterion_key", "judge_answers", "run_arena", "safety_arena",
           "win_rate_markdown", "win_rate_table", "write_arena"]
