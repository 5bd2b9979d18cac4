"""The one interface every method ends as: a policy steered by a preference per request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Protocol, Union, runtime_checkable

from ..core.errors import ConfigError, UnknownObjectiveError
from ..core.preference import Preference

PreferenceArg = Union[Preference, Sequence[Optional[Preference]], None]
"""What ``SteerablePolicy.generate`` takes: one preference for every prompt, or one per prompt."""


@dataclass
class GenerationConfig:
    """How to sample. ``seed`` makes a call repeatable: same seed, same prompts -> same output.

    ``do_sample=False`` is greedy decoding (temperature, top-k and top-p are then ignored);
    ``top_k=0`` and ``top_p=1`` switch truncation off. EOS cannot be chosen before ``min_new_tokens``
    tokens (it is masked out of the sampled distribution, so log-probabilities stay exact). ``stop``
    strings end a response and are cut from its text. ``progress`` shows a progress bar over batches.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    batch_size: int = 16
    system_prompt: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that is out of range."""
        checks = [
            (self.max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {self.max_new_tokens}"),
            (
                0 <= self.min_new_tokens <= max(self.max_new_tokens, 0),
                f"min_new_tokens must be between 0 and max_new_tokens ({self.max_new_tokens}), "
                f"got {self.min_new_tokens}",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.temperature > 0 or not self.do_sample,
                f"temperature must be > 0 when sampling, got {self.temperature}; "
                "use do_sample=False for greedy decoding",
            ),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}; 1 switches it off"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}; 0 switches it off"),
            (all(self.stop), "stop strings must be non-empty; remove the empty one"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


GENERATED_TOKENS = "generated_tokens"
"""``Response.meta`` key: tokens generated to produce this response, when more than its own (best-of-N)."""
KL_SELECTION = "kl_selection"
"""``Response.meta`` key: KL that selecting among samples adds on top of the sampled tokens' KL."""
STEERING = "steering"
"""``Response.meta`` key: what the policy did with the preference (RiC targets, soup weights, nearest point)."""
REFERENCE_LOGPROBS = "reference_logprobs"
"""``Response.meta`` key: log π_ref(token | plain prompt) at T=1 per token, recorded while sampling by a policy that
samples π_ref itself (base, best-of-N), so its KL needs no teacher-forced pass."""


@dataclass
class Response:
    """One generated answer.

    ``token_ids`` are every token actually sampled, without padding: a sampled EOS is kept as the last
    id (it was a choice of the policy, and KL counts it) but not written into ``text``; with a stop
    string, ids run up to the token that completed it while ``text`` is cut where the stop string starts.
    ``logprobs[t]`` is log π(token_ids[t] | context) under the distribution actually sampled from
    (after temperature / truncation / tilting), which the KL to the reference needs; greedy decoding
    samples from a point mass, so its log-probabilities are 0.
    """

    prompt: str
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "length"  # "eos" | "stop" | "length"
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SteerablePolicy(Protocol):
    """Given prompts and a preference, produce responses.

    ``objectives``: the objectives the policy can be steered on (``None``: it accepts any, e.g. it
    ignores the preference). ``uses_scorers_at_decode``: True when the objective scorers are
    consulted while generating (best-of-N), which reports must say. A policy may also set
    ``ignores_preference = True`` (the base model) so a sweep generates once for the whole grid, and
    ``mixes_preferences = True`` when one ``generate`` call serves rows with different preferences in one batch
    (the server and the batched sweep then send them together; otherwise they group rows by preference).
    """

    name: str
    objectives: list[str] | None
    uses_scorers_at_decode: bool

    def generate(
        self,
        prompts: Sequence[str],
        preference: PreferenceArg,
        config: GenerationConfig,
    ) -> list[Response]:
        """One response per prompt; ``preference`` is one for all prompts or a sequence with one per prompt."""
        ...

    def reference(self) -> tuple[Any, Any]:
        """(model, tokenizer) of π_ref, used to measure KL. For LoRA policies: the base with adapters disabled."""
        ...


def preferences_per_prompt(prompts: Sequence[str], preference: PreferenceArg) -> list[Preference | None]:
    """``preference`` as one entry per prompt (a single preference is repeated)."""
    if preference is None or isinstance(preference, Preference):
        return [preference] * len(prompts)
    preferences = list(preference)
    if len(preferences) != len(prompts):
        raise ConfigError(f"got {len(preferences)} preferences for {len(prompts)} prompts; give one preference "
                          "or one per prompt")
    return preferences


def generate_by_preference(
    prompts: Sequence[str],
    preference: PreferenceArg,
    generate_one: Callable[[list[str], Preference | None], list[Response]],
) -> list[Response]:
    """Call ``generate_one(prompts, preference)`` once per distinct preference (rows grouped, order kept): the
    per-row form for policies that cannot mix preferences in one batch."""
    preferences = preferences_per_prompt(prompts, preference)
    groups: dict[Preference | None, list[int]] = {}
    for index, item in enumerate(preferences):
        groups.setdefault(item, []).append(index)
    responses: list[Response | None] = [None] * len(prompts)
    for item, rows in groups.items():
        for row, response in zip(rows, generate_one([prompts[row] for row in rows], item)):
            responses[row] = response
    return responses  # type: ignore[return-value]


def check_steerable(policy: str, objectives: Sequence[str], preference: Preference | None) -> Preference:
    """``preference`` if it weights only objectives the policy can be steered on; one-line errors otherwise."""
    if preference is None:
        raise ConfigError(f"{policy} needs a preference; give weights over {', '.join(objectives)}")
    unknown = [name for name in preference.active() if name not in objectives]
    if unknown:
        raise UnknownObjectiveError(f"{policy} has no policy for objective {unknown[0]!r}; it was trained for "
                                    f"{', '.join(objectives)}: weight only those")
    return preference


def sample_passes(
    policy: "SteerablePolicy",
    prompts: list[str],
    preference: PreferenceArg,
    config: GenerationConfig,
    samples_per_prompt: int,
) -> list[Response]:
    """``samples_per_prompt`` passes over the prompts, pass s with seed ``config.seed + s``."""
    responses: list[Response] = []
    for sample in range(samples_per_prompt):
        seed = None if config.seed is None else config.seed + sample
        responses.extend(policy.generate(prompts, preference, replace(config, seed=seed)))
    return responses
