"""The preference texts: one instruction per objective, worded by its weight (METHODS.md, Personalized Soups).

The prompting baseline writes them into the user's message; RiC appends one objective's instruction when it
samples the base model, to widen the range of rewards it learns to condition on.
"""

from __future__ import annotations

from ...core.preference import Preference

INSTRUCTIONS: dict[str, str] = {
    "simplicity": "Generate a response that can be easily understood by an elementary school student.",
    "conciseness": "Generate a response that is concise and to the point, without being verbose.",
    "informativeness": "Generate a response that is very informative, without missing any background information.",
    "friendliness": "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
    "relevance": "Generate a response that stays on topic and directly answers the request.",
    "harmlessness": "Generate a response that is polite and uses no offensive or profane language.",
    "faithfulness": "Generate a summary that only states what the given text says, adding nothing.",
    "length_cost": "Keep the response short.",
}

EMPHASIS: tuple[tuple[float, str], ...] = (
    (0.75, "Most importantly: {}"),
    (0.45, "{}"),
    (0.15, "To a lesser degree: {}"),
)
"""(lowest weight, wording): weights below the last band are left out of the prompt."""


def steering_text(preference: Preference) -> str:
    """The instructions for ``preference``, strongest first, each worded by its weight band."""
    lines = []
    for name, weight in sorted(preference.weights, key=lambda item: -item[1]):
        band = next((template for floor, template in EMPHASIS if weight >= floor), None)
        if band is not None:
            lines.append(band.format(INSTRUCTIONS[name]))
    return " ".join(lines)
