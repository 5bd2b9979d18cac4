"""Fusion of several policies (MOD, METHODS.md) as a :class:`NextTokenScorer`. A sequence y gets the fused
score of the K policies' prefix log-probabilities L_k = log π_k(y|x), with per-row weights w (≥ 0):

- ``reverse_kl`` (default): s(y) = Σ_k w_k L_k
- ``forward_kl``:            s(y) = −log Σ_k w_k e^(−L_k)
- ``alpha``:                 s(y) = −(1/α) log Σ_k w_k e^(−α L_k)   (α > 0; α = 1 is ``forward_kl``)

As in the original (srzer/MOD ``f_value``), token a after prefix y is scored by s(y·a) − s(y): for reverse KL
that is Σ_k w_k log π_k(a|y), for the others −(1/α) log Σ_k ω_k π_k(a|y)^(−α) with the prefix weights
ω_k ∝ w_k π_k(y|x)^(−α) (normalized, updated after every token, kept per row in float64). These increments
sum to s(y) (up to the constant s(∅) = −(1/α) log Σ_k w_k, 0 for weights summing to 1), so beam search ranks
beams by s itself (``scores_are_increments``), and the sampler draws from softmax(increment / T): weights
(1, 0, …) give exactly policy 1's distribution. ``per_token=True`` keeps ω = w (fuse each token's
log-probabilities on their own, the form the original does not use).

Policies are separate models, each with its own :class:`CausalLMScorer` and KV cache, or LoRA adapters on
one PEFT model, run as ONE forward with PEFT's per-row ``adapter_names`` and one KV cache. Each row has its
own weights, and a policy runs only the rows that weight it (a row with weight 0 on a policy costs no
forward row there; a policy no row weights runs nothing). Enter the scorer (``with scorer:``) for the
decode: adapter routing is then set up once, not at every forward.
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
from .decoding import CausalLMScorer, NextTokenScorer

Divergence = Literal["reverse_kl", "forward_kl", "alpha"]
DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "alpha")


def check_divergence(divergence: str, alpha: float) -> None:
    """Raise ConfigError for an unknown divergence or an α-divergence with α <= 0."""
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; choose from {', '.join(DIVERGENCES)}")
    if divergence == "alpha" and not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"the alpha divergence needs a finite alpha > 0, got {alpha}")


def _exponent(divergence: str, alpha: float) -> float:
    return 1.0 if divergence == "forward_kl" else alpha


def _weight_matrix(weights: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor, policies: int) -> torch.Tensor:
    """``weights`` as a float64 ``(rows, K)`` or ``(K,)`` tensor, checked: ≥ 0, finite, a positive one per row."""
    matrix = torch.as_tensor(weights, dtype=torch.float64)
    if matrix.ndim not in (1, 2) or matrix.shape[-1] != policies:
        raise ConfigError(f"need {policies} weights per row (one per fused policy), got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or not (matrix > 0).any(dim=-1).all():
        raise ConfigError(f"weights must be finite and >= 0 with a positive one per row, got {matrix.tolist()}")
    return matrix


def _fuse(logprobs: torch.Tensor, log_weights: torch.Tensor, divergence: str, alpha: float) -> torch.Tensor:
    """Scores ``(rows, vocab)`` from log-probabilities ``(K, rows, vocab)`` and log-weights ``(rows, K)``;
    policies with weight 0 (-inf) contribute nothing, whatever their log-probabilities."""
    present = torch.isfinite(log_weights).T[:, :, None]
    dense = bool(present.all())
    if divergence == "reverse_kl":
        weighted = log_weights.exp().T[:, :, None].to(logprobs.dtype) * logprobs
        return (weighted if dense else torch.where(present, weighted, 0.0)).sum(dim=0)
    exponent = _exponent(divergence, alpha)
    terms = log_weights.T[:, :, None].to(logprobs.dtype) - exponent * logprobs
    return -torch.logsumexp(terms if dense else torch.where(present, terms, -math.inf), dim=0) / exponent


def fuse_logprobs(
    logprobs: torch.Tensor,
    weights: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
    divergence: str = "reverse_kl",
    alpha: float = 0.5,
) -> torch.Tensor:
    """Fused scores ``(rows, vocab)`` of the policies' log-probabilities ``(K, rows, vocab)``: the module's s
    with L_k = ``logprobs[k]``, for weights ``(K,)`` or one row of K weights per row ``(rows, K)``."""
    check_divergence(divergence, alpha)
    matrix = _weight_matrix(weights, logprobs.shape[0]).to(logprobs.device)
    matrix = matrix.expand(logprobs.shape[1], -1) if matrix.ndim == 1 else matrix
    return _fuse(logprobs, matrix.log(), divergence, alpha)


class AdapterRowsScorer:
    """LoRA adapters of one PEFT model as one batched forward: each row runs under its own adapter (PEFT's
    per-row ``adapter_names``), with one KV cache for all rows.

    ``start(input_ids, attention_mask, policies)`` takes each row's adapter as an index into ``adapter_names``.
    Used as a context manager (``with scorer:``), it routes rows to adapters with hooks installed once on
    the LoRA layers for the whole decode; otherwise PEFT installs and removes them at every forward
    (walking all modules each time: measurable on a CPU, dominant on a GPU).
    """

    def __init__(self, peft_model, adapter_names: Sequence[str]) -> None:
        self.adapters = list(adapter_names)
        self.inner = CausalLMScorer(peft_model)
        self.row_adapters: list[str] = []  # the adapter of each current row, updated in place
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

    def _set_rows(self, adapters: list[str]) -> None:
        self.row_adapters[:] = adapters
        if not self._hooks:
            self.inner.forward_kwargs["adapter_names"] = self.row_adapters

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, policies: Sequence[int]) -> torch.Tensor:
        """Prefill each row under adapter ``adapter_names[policies[row]]``."""
        self._set_rows([self.adapters[int(index)] for index in policies])
        return self.inner.start(input_ids, attention_mask)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row."""
        return self.inner.extend(tokens)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` (repeats allowed), each keeping its adapter."""
        self.inner.keep_rows(rows)
        self._set_rows([self.row_adapters[row] for row in rows.tolist()])


class _Part:
    """One scorer of the fusion and the (policy, row) pairs it runs: its rows are ``rows`` under the
    policies ``policies`` (global indices), policy-major; ``slot[row, j]`` is the scorer row of (row, its j-th
    policy), -1 when the row does not weight that policy."""

    def __init__(self, scorer: NextTokenScorer, first: int, count: int) -> None:
        self.scorer, self.first, self.count = scorer, first, count
        self.rows = self.policies = self.slot = torch.empty(0, dtype=torch.long)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def place(self, present: torch.Tensor, old: torch.Tensor | None = None) -> torch.Tensor:
        """Lay out the pairs of ``present`` ``(rows, count)``; return the ``old`` slot of each (if given)."""
        local = present.T
        rows, columns = torch.arange(local.shape[1]).expand_as(local), torch.arange(local.shape[0])[:, None]
        self.rows, self.policies = rows[local], (columns + self.first).expand_as(local)[local]
        slot = torch.full(local.shape, -1, dtype=torch.long)
        slot[local] = torch.arange(int(local.sum()))
        kept = old.T[local] if old is not None else None
        self.slot = slot.T
        self._on_device = {}
        return kept

    def rows_on(self, device: torch.device) -> torch.Tensor:
        """``rows`` on ``device`` (copied once per layout)."""
        if device not in self._on_device:
            self._on_device[device] = self.rows.to(device)
        return self._on_device[device]

    @property
    def active(self) -> bool:
        return self.rows.numel() > 0


class FusedScorer:
    """The fused score of K policies (see module doc) as a :class:`NextTokenScorer`.

    ``parts`` are scorers of the policies in weight order: any :class:`NextTokenScorer` for one policy
    (a :class:`CausalLMScorer` per separate model) and/or an :class:`AdapterRowsScorer` (one policy per
    adapter). ``weights``: K weights for every row, or a ``(rows, K)`` matrix with one row per prompt row.
    """

    scores_are_increments = True  # beam search ranks beams by the sum of the scores: s(y)

    def __init__(
        self,
        parts: Sequence[NextTokenScorer],
        weights: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
        divergence: str = "reverse_kl",
        alpha: float = 0.5,
        *,
        per_token: bool = False,
    ) -> None:
        check_divergence(divergence, alpha)
        self.divergence, self.alpha, self.per_token = divergence, alpha, per_token
        self._fixed_weights = per_token or divergence == "reverse_kl"  # ω = w: prefix and per-token forms agree
        self.parts: list[_Part] = []
        for part in parts:
            count = len(part.adapters) if isinstance(part, AdapterRowsScorer) else 1
            self.parts.append(_Part(part, sum(p.count for p in self.parts), count))
        self.policies = sum(part.count for part in self.parts)
        self.weights = _weight_matrix(weights, self.policies)
        self.log_weights = torch.empty(0)  # (rows, K): log ω, the prefix weights of each row
        self._logprobs = torch.empty(0)  # (K, rows, vocab) of the last step
        self._picked_rows = torch.empty(0, dtype=torch.long)  # rows of ``_logprobs`` the current rows continue

    def __enter__(self) -> "FusedScorer":
        self._stack = contextlib.ExitStack()
        for part in self.parts:
            if isinstance(part.scorer, AdapterRowsScorer):
                self._stack.enter_context(part.scorer)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _scores(self, logits: list[torch.Tensor | None], rows: int, device: torch.device) -> torch.Tensor:
        """Gather every policy's log-probabilities into ``(K, rows, vocab)`` (0 where a row skips a policy)."""
        vocab = {part_logits.shape[-1] for part_logits in logits if part_logits is not None}
        if len(vocab) > 1:
            raise ConfigError(f"the fused policies have different vocabulary sizes {sorted(vocab)}; use one tokenizer")
        if all(part.rows.numel() == part.count * rows for part in self.parts):  # every row weights every policy
            stacked = torch.cat([part_logits.to(device).float() for part_logits in logits])
            self._logprobs = torch.log_softmax(stacked, dim=-1).view(self.policies, rows, -1)
        else:
            self._logprobs = torch.zeros(self.policies, rows, vocab.pop(), device=device)
            for part, part_logits in zip(self.parts, logits):
                if part_logits is not None:
                    index = (part.policies.to(device), part.rows_on(device))
                    self._logprobs[index] = torch.log_softmax(part_logits.to(device).float(), dim=-1)
        self._picked_rows = torch.arange(rows, device=device)
        return _fuse(self._logprobs, self.log_weights.to(device), self.divergence, self.alpha)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prefill each policy with the rows that weight it; return the fused scores of the first new token."""
        rows = input_ids.shape[0]
        weights = self.weights.expand(rows, -1) if self.weights.ndim == 1 else self.weights
        if weights.shape[0] != rows:
            raise ConfigError(f"got weights for {weights.shape[0]} rows but {rows} prompts; give one row per prompt")
        self.log_weights = weights.log() if self._fixed_weights else weights.log().log_softmax(-1)
        present = torch.isfinite(self.log_weights)
        logits: list[torch.Tensor | None] = []
        for part in self.parts:
            part.place(present[:, part.first : part.first + part.count])
            logits.append(self._start_part(part, input_ids, attention_mask) if part.active else None)
        return self._scores(logits, rows, input_ids.device)

    @staticmethod
    def _start_part(part: _Part, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows = part.rows_on(input_ids.device)
        if isinstance(part.scorer, AdapterRowsScorer):
            return part.scorer.start(input_ids[rows], attention_mask[rows], (part.policies - part.first).tolist())
        return part.scorer.start(input_ids[rows], attention_mask[rows])

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row: update each row's prefix weights, feed every policy its rows' tokens,
        and return the fused scores of the next one."""
        if not self._fixed_weights:
            picked = self._logprobs[:, self._picked_rows, tokens].T.double().cpu()  # (rows, K): log π_k(token|y)
            exponent = _exponent(self.divergence, self.alpha)
            tilted = torch.where(torch.isfinite(self.log_weights), self.log_weights - exponent * picked, -math.inf)
            self.log_weights = tilted.log_softmax(-1)
        logits = [part.scorer.extend(tokens[part.rows_on(tokens.device)]) if part.active else None
                  for part in self.parts]
        return self._scores(logits, tokens.shape[0], tokens.device)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Select ``rows`` in every policy's state and in the rows' weights (repeats allowed)."""
        self._picked_rows = self._picked_rows[rows.to(self._picked_rows.device)]
        rows = rows.cpu()
        self.log_weights = self.log_weights[rows]
        present = torch.isfinite(self.log_weights)
        for part in self.parts:
            if part.active:
                old = part.slot[rows]
                kept = part.place(present[:, part.first : part.first + part.count], old)
                if part.active:
                    part.scorer.keep_rows(kept.to(self._picked_rows.device))


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
