"""Judging criteria: the Personalized Soups preference dimensions (METHODS.md) or free text, and the
prompt every language-model judge reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.errors import ConfigError

PREFERENCE_DIMENSIONS: dict[str, str] = {
    "P1A": "Generate a response that can be easily understood by an elementary school student.",
    "P1B": "Generate a response that only a PhD Student in that specific field could understand.",
    "P2A": "Generate a response that is concise and to the point, without being verbose.",
    "P2B": "Generate a response that is very informative, without missing any background information.",
    "P3A": "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
    "P3B": "Generate a response in an unfriendly manner.",
}
"""The P-Soups preference prompts by dimension name (P3B is the extra one for new-preference tests)."""

_DIMENSION_NAME = re.compile(r"^P\d+[A-Z]$", re.I)

JUDGE_SYSTEM = (
    "You are a careful judge of AI assistants. You read an instruction and two responses to it, and "
    "select the response that better fits this criterion: {criterion}"
)
JUDGE_USER = (
    "## Instruction\n{prompt}\n\n## {first_label}\n{first}\n\n## {second_label}\n{second}\n\n"
    "## Question\nWhich response better fits the criterion \"{criterion}\"? Answer with only {options}."
)


@dataclass(frozen=True)
class Criterion:
    """What a judge compares on: a preference dimension's name and text, or free text (``name`` None)."""

    text: str
    name: str | None = None


def resolve_criterion(criterion: str | Criterion) -> Criterion:
    """A dimension name (``P1A``) becomes its preference text; anything else is a free-text criterion."""
    if isinstance(criterion, Criterion):
        return criterion
    text = str(criterion).strip()
    if not text:
        raise ConfigError(
            f"the judging criterion is empty; give a dimension ({', '.join(PREFERENCE_DIMENSIONS)}) or a sentence"
        )
    if _DIMENSION_NAME.match(text):
        name = text.upper()
        if name not in PREFERENCE_DIMENSIONS:
            raise ConfigError(
                f"unknown preference dimension {text!r}; known dimensions: {', '.join(PREFERENCE_DIMENSIONS)}"
            )
        return Criterion(PREFERENCE_DIMENSIONS[name], name)
    names = [name for name, known in PREFERENCE_DIMENSIONS.items() if known == text]
    return Criterion(text, names[0] if names else None)


def judge_messages(
    prompt: str, first: str, second: str, criterion: Criterion, labels: tuple[str, str], options: str
) -> list[dict[str, str]]:
    """The system and user turns asking which of two responses (shown under ``labels``) fits ``criterion``."""
    user = JUDGE_USER.format(
        prompt=prompt,
        first_label=labels[0],
        first=first,
        second_label=labels[1],
        second=second,
        criterion=criterion.text,
        options=options,
    )
    return [
        {"role": "system", "content": JUDGE_SYSTEM.format(criterion=criterion.text)},
        {"role": "user", "content": user},
    ]
