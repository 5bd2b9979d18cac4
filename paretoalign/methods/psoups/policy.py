"""The steerable P-Soups policy and its baselines: a preference over dimensions writes the weighted dimensions'
texts into each prompt (as the paper's evaluation prompted every model) and picks the weights: the soup merges
the per-dimension adapters with them (the shared :class:`~paretoalign.methods.common.soup.SoupPolicy`); the
multitask and P-MORL baselines run their one adapter, the prompting baseline the base model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError
from ...core.preference import Preference
from ...core.rundir import RunDirectory
from .dimensions import steer

if TYPE_CHECKING:
    import torch

    from ...generation.policy import GenerationConfig, PreferenceArg, Response
    from ...objectives.base import Objective
    from ..common.soup import SoupPolicy
    from .recipe import PSoupsConfig


class PSoupsPolicy:
    """Answers each prompt with its preference's weighted dimensions' texts appended, by the soup merged for that
    preference (``soup``) or by one fixed ``model`` (a baseline). ``objectives`` are the dimension names."""

    uses_scorers_at_decode = False

    def __init__(self, texts: Mapping[str, str], tokenizer: Any, *, soup: SoupPolicy | None = None,
                 model: torch.nn.Module | None = None, name: str = "psoups") -> None:
        if (soup is None) == (model is None):
            raise ConfigError("a P-Soups policy runs either a soup or one model; give exactly one")
        self.texts = dict(texts)
        self.objectives = list(self.texts)
        self.tokenizer = tokenizer
        self.soup = soup
        self.model = model
        self.name = name

    def steer(self, prompt: str, preference: Preference) -> str:
        """``prompt`` with the texts of the dimensions ``preference`` weights, in the run's dimension order."""
        active = preference.active()
        return steer(prompt, [text for name, text in self.texts.items() if name in active])

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Rows grouped by preference: each group's prompts steered, answered by the model for that preference."""
        from ...generation import STEERING, check_steerable, generate, generate_by_preference

        def one(group: list[str], item: Preference | None) -> list[Response]:
            item = check_steerable(f"the {self.name} policy", self.objectives, item)
            model = self.soup.merge(item) if self.soup is not None else self.model
            steered = [self.steer(prompt, item) for prompt in group]
            responses = generate(model, self.tokenizer, steered, config)
            steering: dict[str, Any] = {"instructions": steered[0][len(group[0]):].strip() if group else ""}
            if self.soup is not None:
                steering.update(merge_weights=dict(zip(self.soup.objectives, self.soup.weights_for(item))),
                                mode=self.soup.mode)
            for prompt, response in zip(group, responses):
                response.prompt = prompt
                response.meta[STEERING] = dict(steering)
            return responses

        return generate_by_preference(prompts, preference, one)

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base model with every adapter off."""
        from ...models.lora import AdapterFreeModel

        if self.soup is not None:
            return self.soup.reference()
        if hasattr(self.model, "disable_adapter"):
            return AdapterFreeModel(self.model), self.tokenizer
        return self.model, self.tokenizer


def build_variant(run: RunDirectory, config: PSoupsConfig, objectives: list[Objective], variant: str, device: str,
                  dtype: str) -> PSoupsPolicy:
    """The soup or a baseline of a finished run; every adapter folder is checked before any model loads."""
    from ...models import load_model
    from ..common.objective_policies import policy_folders
    from ..common.soup import SoupPolicy
    from .stages import stored_dimensions

    texts = {d.name: d.text for d in stored_dimensions(run)}
    folders = policy_folders(run) if variant == "soup" else _baseline_folder(run, variant)
    base_model, tokenizer = load_model(config.model, device=device, dtype=dtype)
    name = "psoups" if variant == "soup" else f"psoups-{variant}"
    if variant == "soup":
        return PSoupsPolicy(texts, tokenizer, soup=SoupPolicy(base_model, tokenizer, folders, mode=config.merge,
                                                              name=name), name=name)
    if folders:
        from ...models.lora import load_adapters

        base_model = load_adapters(base_model, folders, [variant])
    return PSoupsPolicy(texts, tokenizer, model=base_model, name=name)


def _baseline_folder(run: RunDirectory, variant: str) -> dict[str, Any]:
    """{variant: adapter folder} of a trained baseline, {} for prompting; one-line errors for one not trained."""
    if variant == "prompting":
        return {}
    entry = run.manifest.get("baselines", {}).get(variant)
    if entry is None:
        raise ConfigError(f"{str(run.path)!r} trained no {variant} baseline ({variant} was off); refit with "
                          f"--{variant} to compare against it")
    folder = run.path / entry["adapter"]
    if not folder.is_dir():
        raise ConfigError(f"{str(run.path)!r} has lost its {variant} baseline ({folder} is missing); refit it with "
                          "`paretoalign fit psoups --overwrite` and the same settings")
    return {variant: folder}
