"""Logit-level fusion of several policies (MOD, METHODS.md): a :class:`NextTokenScorer` whose score of
each next token a is the weighted fusion of the K policies' log-probabilities log π_k(a|s):

- ``reverse_kl`` (default): s(a) = Σ_k w_k log π_k(a|s)
- ``forward_kl``:            s(a) = −log Σ_k w_k / π_k(a|s)
- ``alpha``:                 s(a) = −log Σ_k w_k π_k(a|s)^(−α)   (α > 0; α = 1 is ``forward_kl``)

computed in log space (``logsumexp``). The token chooser then samples from softmax(s / T) (after top-k /
top-p when set), so ``Response.logprobs`` are under the distribution actually sampled from.

Policies are separate models, each with its own :class:`CausalLMScorer` and KV cache, or LoRA adapters on
one PEFT model, run as ONE forward over B×K rows with PEFT's per-row ``adapter_names`` and one KV cache.
Callers pass only the policies with weight > 0, so a zero weight costs no forward at all. Enter the scorer
(``with scorer:``) for the decode: adapter routing is then set up once, not at every forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from peft.tuners.lora import LoraLayer
from peft.utils import AuxiliaryTrainingWrapper

from ..core.errors import ConfigError
from .decoding import CausalLMScorer

Divergence = Literal["reverse_kl", "forward_kl", "alpha"]
DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "alpha")


def check_divergence(divergence: str, alpha: float) -> None:
    """Raise ConfigError for an unknown divergence or an α-divergence with α <= 0."""
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; choose from {', '.join(DIVERGENCES)}")
    if divergence == "alpha" and not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"the alpha divergence needs a finite alpha > 0, got {alpha}")


def fuse_logprobs(
    logprobs: torch.Tensor,
    weights: Sequence[float],
    divergence: str = "reverse_kl",
    alpha: float = 0.5,
) -> torch.Tensor:
    """Fused next-token scores ``(rows, vocab)`` from the policies' log-probabilities ``(K, rows, vocab)``.

    Weights must be > 0 (leave zero-weight policies out: they would only cost compute).
    """
    check_divergence(divergence, alpha)
    if len(weights) != logprobs.shape[0] or any(w <= 0 for w in weights):
        raise ConfigError(f"need one weight > 0 per fused policy ({logprobs.shape[0]}), got {list(weights)}")
    w = torch.tensor(weights, dtype=logprobs.dtype, device=logprobs.device)[:, None, None]
    if divergence == "reverse_kl":
        return (w * logprobs).sum(dim=0)
    exponent = 1.0 if divergence == "forward_kl" else alpha
    return -torch.logsumexp(w.log() - exponent * logprobs, dim=0)


class AdapterRowsScorer:
    """K LoRA adapters of one PEFT model as one batched forward: row ``k·R + r`` is prompt row r under
    adapter k (PEFT's per-row ``adapter_names``), with one KV cache for all K·R rows.

    Its scores are ``(K·R, vocab)`` logits, adapter-major; :class:`FusedScorer` views them as ``(K, R, vocab)``.
    Used as a context manager (``with scorer:``), it routes rows to adapters with hooks installed once on
    the LoRA layers for the whole decode; otherwise PEFT installs and removes them at every forward
    (walking all modules each time: measurable on a CPU, dominant on a GPU).
    """

    def __init__(self, peft_model, adapter_names: Sequence[str]) -> None:
        self.adapters = list(adapter_names)
        self.inner = CausalLMScorer(peft_model)
        self.row_adapters: list[str] = []  # the adapter of each current row, updated in place
        self.rows = 0
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "AdapterRowsScorer":
        routed = (module for module in self.inner.model.modules() if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)))
        self._hooks = [module.register_forward_pre_hook(self._route, with_kwargs=True) for module in routed]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _route(self, module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "adapter_names": self.row_adapters}

    def _select_adapters(self, rows: int) -> None:
        self.rows = rows
        self.row_adapters[:] = [name for name in self.adapters for _ in range(rows)]
        if not self._hooks:
            self.inner.forward_kwargs["adapter_names"] = self.row_adapters

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prefill every prompt once per adapter."""
        self._select_adapters(input_ids.shape[0])
        count = len(self.adapters)
        return self.inner.start(input_ids.repeat(count, 1), attention_mask.repeat(count, 1))

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row's token to all of its adapter copies."""
        return self.inner.extend(tokens.repeat(len(self.adapters)))

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` (repeats allowed) in every adapter's block."""
        offsets = torch.arange(len(self.adapters), device=rows.device)[:, None] * self.rows
        self.inner.keep_rows((offsets + rows[None]).flatten())
        self._select_adapters(rows.shape[0])


class FusedScorer:
    """The fused score of K policies (see module doc) as a :class:`NextTokenScorer`.

    ``parts`` are scorers of the policies in weight order: a :class:`CausalLMScorer` per separate model
    (one policy each) and/or an :class:`AdapterRowsScorer` (one policy per adapter).
    """

    def __init__(
        self,
        parts: Sequence[CausalLMScorer | AdapterRowsScorer],
        weights: Sequence[float],
        divergence: str = "reverse_kl",
        alpha: float = 0.5,
    ) -> None:
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]
        self.divergence = divergence
        self.alpha = alpha
        check_divergence(divergence, alpha)
        counts = [len(part.adapters) if isinstance(part, AdapterRowsScorer) else 1 for part in self.parts]
        if sum(counts) != len(self.weights):
            raise ConfigError(f"got {len(self.weights)} weights for {sum(counts)} policies; give one per policy")
        self.counts = counts

    def __enter__(self) -> "FusedScorer":
        self._stack = contextlib.ExitStack()
        for part in self.parts:
            if isinstance(part, AdapterRowsScorer):
                self._stack.enter_context(part)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _fuse(self, part_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        device = part_logits[0].device
        stacked = [
            logits.to(device).view(count, -1, logits.shape[-1]) for logits, count in zip(part_logits, self.counts)
        ]
        vocab = {logits.shape[-1] for logits in stacked}
        if len(vocab) > 1:
            raise ConfigError(f"the fused policies have different vocabulary sizes {sorted(vocab)}; use one tokenizer")
        logprobs = torch.log_softmax(torch.cat(stacked).float(), dim=-1)
        return fuse_logprobs(logprobs, self.weights, self.divergence, self.alpha)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prefill every policy's cache; return the fused scores of the first new token."""
        return self._fuse([part.start(input_ids, attention_mask) for part in self.parts])

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row in every policy; return the fused scores of the next one."""
        return self._fuse([part.extend(tokens) for part in self.parts])

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` in every policy's state (repeats allowed)."""
        for part in self.parts:
            part.keep_rows(rows)


def check_same_tokenizer(tokenizers: Mapping[str, object]) -> None:
    """Raise ConfigError naming the first two policies whose tokenizers differ (vocabulary or special tokens)."""
    named = list(tokenizers.items())
    first_name, first = named[0]
    for name, other in named[1:]:
        if other is first:
            continue
        same = other.get_vocab() == first.get_vocab() and other.all_special_tokens == first.all_special_tokens
        if not same:
            raise ConfigError(
                f"policies {first_name!r} and {name!r} have different tokenizers; MOD fuses token by token, "
                "so give policies fine-tuned from the same base model"
            )
