"""Per-row mixing of LoRA deltas: each row of one batch runs with its own weights over K adapters,
y = W0 x + Σ_k w_k(row) (α_k/r_k) B_k A_k x, in one forward pass.

For linear layers this equals, row by row, the model :func:`~paretoalign.models.merge_lora_deltas` builds
for that row's weights (``mode="delta"``), so requests with different preferences share a batch (Rewarded
Soups / P-Soups in the server and the batched sweep) instead of one merge and one batch per preference.
Each adapted layer stacks its adapters' A_k and B_k once; a forward costs two thin matmuls per layer, as
the merged adapter does, with the per-row coefficients w_k(row) α_k/r_k applied between them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from torch.nn import functional as F

from paretoalign.core.errors import ConfigError

from .interpolation import _check_merge_inputs, _lora_layers


class _StackedDeltas:
    """One layer's adapters side by side: A (Σr, in), B (out, Σr), and for each rank slot its adapter and α/r."""

    def __init__(self, layer: LoraLayer, adapters: Sequence[str]) -> None:
        present = [(k, name) for k, name in enumerate(adapters) if name in layer.lora_A]
        self.a = torch.cat([layer.lora_A[name].weight.detach() for _, name in present])
        self.b = torch.cat([layer.lora_B[name].weight.detach() for _, name in present], dim=1)
        self.slot_adapter = torch.tensor([k for k, name in present for _ in range(layer.r[name])], device=self.a.device)
        self.slot_scaling = torch.tensor([layer.scaling[name] for _, name in present for _ in range(layer.r[name])],
                                         dtype=self.a.dtype, device=self.a.device)

    def delta(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_k weights[row, k] s_k B_k A_k x for every row of ``x`` (rows first, features last)."""
        coefficients = weights[:, self.slot_adapter].to(self.a.dtype) * self.slot_scaling
        coefficients = coefficients.view(x.shape[0], *[1] * (x.dim() - 2), -1)
        return F.linear(F.linear(x.to(self.a.dtype), self.a) * coefficients, self.b)


class LoRARowMixing:
    """The per-row weights of an active :func:`mix_lora_rows` block; ``keep_rows`` follows rows leaving a batch."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep the weights of ``rows`` (indices into the current rows), in that order, as a KV cache does."""
        self.weights = self.weights[rows.to(self.weights.device)]

    def _hook(self, stacked: _StackedDeltas):
        def add_delta(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if x.dim() < 2 or x.shape[0] != self.weights.shape[0]:
                raise ConfigError(f"per-row LoRA mixing has weights for {self.weights.shape[0]} rows but the layer got "
                                  f"input of shape {tuple(x.shape)}; give one weight row per batch row")
            return output + stacked.delta(x, self.weights).to(output.dtype)

        return add_delta


def _check_weights(weights: torch.Tensor | Sequence[Sequence[float]], count: int) -> torch.Tensor:
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.dim() != 2 or weights.shape[1] != count:
        raise ConfigError(f"per-row LoRA weights must have shape (rows, {count}), one column per adapter; "
                          f"got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise ConfigError("per-row LoRA weights must be finite numbers")
    return weights


def _check_no_saved_modules(model: PeftModel, adapters: Sequence[str]) -> None:
    for name, wrapper in model.named_modules():
        if isinstance(wrapper, ModulesToSaveWrapper) and any(a in wrapper.modules_to_save for a in adapters):
            raise ConfigError(f"module {name!r} is trained in full by an adapter (modules_to_save), which cannot be "
                              "mixed per row; merge such adapters with merge_lora_deltas")


@contextlib.contextmanager
def mix_lora_rows(
    peft_model: PeftModel,
    adapter_names: Sequence[str],
    weights: torch.Tensor | Sequence[Sequence[float]],
) -> Iterator[LoRARowMixing]:
    """Within the block, every forward of ``peft_model`` runs batch row i as W0 + Σ_k weights[i, k] ΔW_k.

    ``weights`` has one row per batch row and one column per adapter in ``adapter_names``; adapters are
    otherwise off (the active adapter is restored on exit). For inference: LoRA dropout is not applied.
    Call ``keep_rows`` on the yielded object whenever the batch drops or repeats rows (KV-cache decoding).
    """
    _check_merge_inputs(peft_model, adapter_names, "delta", merged_name="")
    _check_no_saved_modules(peft_model, adapter_names)
    layers = _lora_layers(peft_model, adapter_names)
    device = next(peft_model.parameters()).device
    mixing = LoRARowMixing(_check_weights(weights, len(adapter_names)).to(device))
    hooks = []
    with peft_model.disable_adapter():
        try:
            for layer in layers.values():
                hooks.append(layer.register_forward_hook(mixing._hook(_StackedDeltas(layer, adapter_names))))
            yield mixing
        finally:
            for hook in hooks:
                hook.remove()
