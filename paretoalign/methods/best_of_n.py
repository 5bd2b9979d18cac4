"""Best-of-N: sample N answers from the base model and keep the one the objectives score best.

The ranking uses the scalarized, normalized scores of the *same objectives the evaluation measures*
(`uses_scorers_at_decode = True`): an upper reference for what decoding-time selection can reach,
which reports must mark (the original MAVIS baseline ranked with the evaluation reward models silently).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..core.config import setting
from ..core.errors import ConfigError
from ..core.preference import Preference
from .common.recipe import InstantConfig, InstantRecipe

if TYPE_CHECKING:
    from ..generation.policy import GenerationConfig, PreferenceArg, Response
    from ..objectives.base import Objective


def best_of_n_kl(n: int) -> float:
    """The standard analytic KL of best-of-n selection, log n − (n − 1)/n (Stiennon et al. 2020)."""
    return math.log(n) - (n - 1) / n


class BestOfNPolicy:
    """Keeps the best of ``n`` samples per prompt under Σ w_i · normalized reward_i."""

    uses_scorers_at_decode = True
    mixes_preferences = True

    def __init__(self, model, tokenizer, objectives: Sequence[Objective], n: int = 4, name: str = "best_of_n") -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"best-of-N needs n >= 1, got {n!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.scorers = list(objectives)
        self.objectives = [objective.name for objective in self.scorers]
        self.n = n
        self.name = name
        self._cache: tuple[tuple, dict[int | None, list[Response]]] | None = None

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """One pool of N samples per prompt, each row re-ranked by its own preference; a prompt asked under
        several preferences shares the pool that a call per preference would draw (its tokens counted once)."""
        import numpy as np

        from ..generation.policy import GENERATED_TOKENS, KL_SELECTION, STEERING, preferences_per_prompt
        from ..objectives import reward_all, scalarize

        preferences = preferences_per_prompt(prompts, preference)
        if any(item is None for item in preferences):
            raise ConfigError("best-of-N needs a preference to rank its samples; give weights")
        pool_prompts, pool_of_row = _pools(prompts, preferences)
        candidates, fresh = self._candidates(pool_prompts, config)
        active = {name for item in preferences for name in item.active()}
        scorers = [objective for objective in self.scorers if objective.name in active]
        rewards = reward_all(scorers, [c.prompt for c in candidates], [c.text for c in candidates])
        chosen, counted = [], set()
        for pool, item in zip(pool_of_row, preferences):
            rows = slice(pool * self.n, (pool + 1) * self.n)
            group = candidates[rows]
            scores = scalarize({name: values[rows] for name, values in rewards.items()}, item)
            best = group[int(np.argmax(scores))]
            best = replace(best, meta=dict(best.meta))
            best.meta[GENERATED_TOKENS] = sum(len(c.token_ids) for c in group) if fresh and pool not in counted else 0
            counted.add(pool)
            best.meta[KL_SELECTION] = best_of_n_kl(self.n)
            best.meta[STEERING] = {"ranked_samples": self.n, "scalarized_reward": float(np.max(scores))}
            chosen.append(best)
        return chosen

    def _candidates(self, prompts: Sequence[str], config: GenerationConfig) -> tuple[list[Response], bool]:
        """N samples per prompt, and whether they were drawn now. They do not depend on the preference, so
        a sweep over a weight grid draws them once per seed and only re-ranks them per point (pools of the
        last prompt set are kept); re-ranked answers report 0 generated tokens, like reused base answers."""
        key = (tuple(prompts), repr(replace(config, seed=None)))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, {})
        pools = self._cache[1]
        fresh = config.seed is None or config.seed not in pools
        if fresh:
            from ..generation import generate

            expanded = [prompt for prompt in prompts for _ in range(self.n)]
            pools[config.seed] = generate(self.model, self.tokenizer, expanded, config, reference=True)
        return [replace(candidate, meta=dict(candidate.meta)) for candidate in pools[config.seed]], fresh

    def reference(self) -> tuple[Any, Any]:
        return self.model, self.tokenizer


def _pools(prompts: Sequence[str], preferences: Sequence[Preference]) -> tuple[list[str], list[int]]:
    """The distinct (prompt, occurrence among its preference's rows) of a call, in order, and each row's index
    among them: pools drawn for these prompts get the seeds each call per preference would give its rows."""
    from collections import Counter

    seen: Counter[tuple[Preference, str]] = Counter()
    index: dict[tuple[str, int], int] = {}
    pool_of_row = []
    for prompt, item in zip(prompts, preferences):
        key = (prompt, seen[item, prompt])
        seen[item, prompt] += 1
        pool_of_row.append(index.setdefault(key, len(index)))
    return [prompt for prompt, _ in index], pool_of_row


@dataclass
class BestOfNConfig(InstantConfig):
    """Best-of-N: the base model and how many samples it ranks."""

    n: int = setting(4, "samples drawn per prompt, the best kept under the preference's scalarized reward")


class BestOfNRecipe(InstantRecipe):
    name = "best_of_n"
    summary = "N samples of the base model, the best kept by the objectives' scalarized reward (decode-time scorers)"
    Config = BestOfNConfig
    presets = {"quick": {"n": 4}, "full": {"n": 8}}

    def needs_normalization(self, config: BestOfNConfig) -> bool:
        return True

    def build(self, model: Any, tokenizer: Any, objectives: list, config: BestOfNConfig) -> BestOfNPolicy:
        return BestOfNPolicy(model, tokenizer, objectives, n=config.n)
