"""Where SIPO's pairs come from: a dataset's objective-labelled pairs (through the data adapters), or the base
model's samples scored by the objectives; and the conflicting pairs among them (``data.conflicting_pairs``).

Dataset pairs are split by ``data.split_of`` on the prompt text: only ``train`` prompts are trained on or mined
for conflicts, so the same prompts stay held out on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...core.errors import ConfigError, DataError
from ...data import PreferencePair, SafetyPair, ScoredResponse, conflicting_pairs, load_mixture, pairs_from_scores
from ...data.prompts import split_of
from ...data.records import SAFETY_OBJECTIVES
from ...objectives.base import Objective

SAFETY_KINDS = {objective: kind for kind, objective in SAFETY_OBJECTIVES.items()}
"""PKU-SafeRLHF's labels: helpfulness (its ``better`` answer) and harmlessness (its ``safer`` one)."""


def dataset_labels(objectives: Sequence[Objective], labels: Sequence[str]) -> list[str]:
    """The dataset label of each objective, in objective order (default: the objective names)."""
    if not labels:
        return [objective.name for objective in objectives]
    if len(labels) != len(objectives):
        raise ConfigError(f"got {len(labels)} labels for {len(objectives)} objectives; give one label per objective")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels {', '.join(labels)} repeat one; give each objective its own label")
    return list(labels)


def read_dataset(spec: str, seed: int) -> list[Any]:
    """The dataset's records (PreferencePair, ScoredResponse or SafetyPair) through its adapter."""
    return load_mixture([spec], seed=seed)


def labelled_pairs(records: Sequence[Any], labels: Sequence[str]) -> dict[str, list[PreferencePair]]:
    """Each label's pairs on train-split prompts: HelpSteer-like scored responses paired by the label's score,
    PKU-SafeRLHF pairs ordered by their better/safer answer, pairs labelled with it."""
    safety = [record for record in records if isinstance(record, SafetyPair)]
    if safety:
        unknown = [label for label in labels if label not in SAFETY_KINDS]
        if unknown:
            raise ConfigError(f"PKU-SafeRLHF pairs have the labels {', '.join(SAFETY_KINDS)}, not {unknown[0]!r}; "
                              "give --labels helpfulness harmlessness (in objective order)")
    by_label: dict[str, list[PreferencePair]] = {label: [] for label in labels}
    for label in labels:
        by_label[label] += [pair.to_preference(SAFETY_KINDS[label]) for pair in safety]
    scored = [record for record in records if isinstance(record, ScoredResponse)]
    given = [record for record in records if isinstance(record, PreferencePair)]
    for pair in [*pairs_from_scores(scored, labels), *given]:
        if pair.objective in by_label:
            by_label[pair.objective].append(pair)
    by_label = {label: train_split(pairs) for label, pairs in by_label.items()}
    empty = [label for label, pairs in by_label.items() if not pairs]
    if empty:
        raise DataError(f"the dataset has no train-split pairs labelled {empty[0]!r}; give --labels that name its "
                        "labels in objective order")
    return by_label


def dataset_conflicts(records: Sequence[Any], labels: Sequence[str]) -> list[PreferencePair]:
    """Train-split pairs the labels order differently, chosen by the first label."""
    return train_split(conflicting_pairs(records, labels))


def sample_conflicts(prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                     objectives: Sequence[Objective]) -> list[PreferencePair]:
    """Pairs of one prompt's samples that the objectives order differently, chosen by the first objective
    (scores oriented so higher is better)."""
    flat_prompts = [prompt for prompt, group in zip(prompts, candidates) for _ in group]
    flat_texts = [text for group in candidates for text in group]
    scores = {o.name: o.orient(o.score(flat_prompts, flat_texts)) for o in objectives}
    scored = [ScoredResponse(prompt, text, {name: float(values[i]) for name, values in scores.items()})
              for i, (prompt, text) in enumerate(zip(flat_prompts, flat_texts))]
    return conflicting_pairs(scored, [o.name for o in objectives])


def train_split(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pairs whose prompt falls in the train split (``data.split_of`` of the prompt text)."""
    return [pair for pair in pairs if split_of(pair.prompt) == "train"]
