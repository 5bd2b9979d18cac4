"""Per-sequence log-probabilities of response tokens under a causal LM.

Every DPO-family loss and every NLL term in ``losses`` takes the sums computed here, so the
prompt/response split is decided in exactly one place.
"""

from __future__ import annotations

import torch

from ..generation.kl import token_logprobs

IGNORE_INDEX = -100


def response_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log π(labels[t] | labels[<t]) over response tokens, per sequence, and their count.

    ``logits`` is (B, T, V) from a causal LM run on (B, T) tokens; ``labels`` holds those tokens
    (``-100`` entries are skipped); ``response_mask`` is (B, T), true on the response tokens,
    aligned with ``labels``. Logits at position t score the token at t + 1, so position 0 is never
    scored. Returns float32 ``(sum_logps, n_tokens)``, both of shape (B,): ``-sum_logps / n_tokens``
    is the length-normalized NLL of the response.
    """
    if logits.shape[:2] != labels.shape or labels.shape != response_mask.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must agree on (batch, length)"
        )
    targets = labels[:, 1:]
    scored = response_mask[:, 1:].bool() & (targets != IGNORE_INDEX)
    token_logps = token_logprobs(logits[:, :-1], targets.masked_fill(~scored, 0))
    sum_logps = (token_logps * scored).sum(dim=-1)
    return sum_logps, scored.sum(dim=-1)


def response_logits(model: torch.nn.Module, labels: torch.Tensor,
                    **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits from the last prompt position on (over the prompt the LM head would score nothing), and
    ``labels`` cut to the same columns: what :func:`response_logprobs` and the SFT loss need, for less work.

    ``labels`` is (B, T) with ``-100`` on prompt and padding; ``inputs`` are the model's other arguments.
    """
    scored = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()
    start = int(scored[0]) if len(scored) else labels.shape[1] - 1
    keep = labels.shape[1] - start
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    return logits, labels[:, start:]
