"""DPO implicit rewards r(y|x) = β·(log π(y|x) − log π_ref(y|x)), summed over response tokens, under each
per-objective policy and under their weight interpolations: what SIPO's combine and filter compare.

The policies are LoRA adapters on one base, loaded once in objective order; π_ref is the base with every adapter
off; an interpolation is W0 + Σ_k w_k ΔW_k (``models.merge_lora_deltas``, the delta mode). Responses are tokenized
as DPO trains on them (the template's finished assistant turn, ``training.sft``), so a first-round policy's
implicit reward here is the one its DPO loss optimized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...generation.chat import render_prompts
from ...generation.kl import sequence_logprobs
from ...models import load_model, merge_lora_deltas, set_active_adapter
from ...models.lora import AdapterFreeModel, check_tokenizers, load_adapters
from ...training.logprobs import IGNORE_INDEX
from ...training.sft import render_conversation, tokenize_completion
from .rules import ordered_folders


class ImplicitRewards:
    """Implicit rewards under K per-objective adapters (``folders``, objective -> adapter folder; the order of
    the rows follows ``objectives``) and their interpolations, on ``base`` (a model spec)."""

    def __init__(self, folders: Mapping[str, Path], objectives: Sequence[str], base: str | None, *, beta: float,
                 device: str = "auto", batch_size: int = 16) -> None:
        folders = ordered_folders(folders, objectives)
        model, self.tokenizer = load_model(base, device=device)
        check_tokenizers(self.tokenizer, model, folders)
        self.objectives = list(folders)
        self.adapter_names = [f"policy{index}" for index in range(len(folders))]
        self.model = load_adapters(model, folders, self.adapter_names)
        self.beta, self.batch_size = beta, batch_size

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 weights: Sequence[Sequence[float]]) -> np.ndarray:
        """``(len(weights), len(responses))``: row i the implicit rewards under the policy with per-objective
        weights ``weights[i]`` (one-hot: that objective's policy; else the interpolation)."""
        ids = [self.response_ids(prompt, response) for prompt, response in zip(prompts, responses)]
        reference = self._sums(AdapterFreeModel(self.model), prompts, ids)
        rows = []
        for row in weights:
            self._activate(row)
            rows.append(self.beta * (self._sums(self.model, prompts, ids) - reference))
        return np.stack(rows)

    def response_ids(self, prompt: str, response: str) -> list[int]:
        """The response's tokens as DPO trains on them: the finished assistant turn after the rendered prompt."""
        prompt_text = render_prompts(self.tokenizer, [prompt])[0]
        full = render_conversation(self.tokenizer, prompt_text, prompt, response, None)
        ids, labels = tokenize_completion(self.tokenizer, prompt_text, full)
        return [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]

    def _activate(self, weights: Sequence[float]) -> None:
        weights = [float(w) for w in weights]
        if len(weights) != len(self.adapter_names):
            raise ValueError(f"got {len(weights)} weights for {len(self.adapter_names)} policies")
        if max(weights) == 1.0:
            set_active_adapter(self.model, self.adapter_names[weights.index(1.0)])
        else:
            merge_lora_deltas(self.model, self.adapter_names, weights, "delta")

    def _sums(self, model, prompts: Sequence[str], ids: Sequence[Sequence[int]]) -> np.ndarray:
        logprobs = sequence_logprobs(model, self.tokenizer, prompts, ids, batch_size=self.batch_size)
        return np.array([float(row.double().sum()) for row in logprobs])
