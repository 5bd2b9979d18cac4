"""KL to the reference (METHODS.md): per sequence, Σ_t [log π(a_t|s_t) − log π_ref(a_t|s_t)] over the
sampled tokens, with π the distribution actually sampled from (``Response.logprobs``) and π_ref the
full, untruncated reference distribution at temperature 1, read by teacher forcing.

The reference sees the plain prompt: steering text a policy adds to its own prompt (a preference
prompt, RiC's reward targets) is part of the policy, not of π_ref, so prompts are passed separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..core.errors import ConfigError
from .chat import pad_id, pad_left, prompt_token_ids
from .decoding import evaluation_mode
from .policy import Response


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Teacher-forced log softmax(logits / temperature)[tokens] in float32: (B, T, V) and (B, T) -> (B, T); one
    sequence at a time so the float32 upcast of the logits stays one row. Every log-likelihood (KL, DPO, PPO)
    is computed here."""
    rows = []
    for row_logits, row_tokens in zip(logits, tokens):
        row_logits = row_logits.float() / temperature
        rows.append(row_logits.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1) - row_logits.logsumexp(dim=-1))
    return torch.stack(rows)


def _batch_logprobs(
    model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], padding_value: int
) -> list[torch.Tensor]:
    """Teacher-forced log-probabilities of one batch: prompts left-padded to end in the same column,
    responses right-padded after them, so only the last ``longest + 1`` positions need logits."""
    longest = max(len(ids) for ids in responses)
    if longest == 0:
        return [torch.zeros(0) for _ in responses]
    device = model.device
    prompt_ids, prompt_mask = pad_left(prompts, padding_value)
    rows = [torch.tensor(ids, dtype=torch.long) for ids in responses]
    response_ids = pad_sequence(rows, batch_first=True, padding_value=padding_value)
    response_mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1).to(device)
    output = model(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1).to(device),
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
        logits_to_keep=longest + 1,
    )
    logprobs = token_logprobs(output.logits[:, :-1], response_ids.to(device))
    return [logprobs[i, : len(ids)].cpu() for i, ids in enumerate(responses)]


def sequence_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses_token_ids: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    rendered: bool = False,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Per-token log π(a_t|s_t) of each given response after its chat-rendered prompt (float32, on CPU).

    Full distribution at temperature 1: the reference side of the KL, and the likelihoods DPO/PPO need. Rows are
    batched in order of length (responses, then prompts) so a batch pads little; results come in the given order.
    """
    if len(prompts) != len(responses_token_ids):
        raise ConfigError(
            f"got {len(prompts)} prompts for {len(responses_token_ids)} responses; give one prompt per response"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    prompt_ids = prompt_token_ids(tokenizer, prompts, system_prompt, rendered=rendered)
    padding_value = pad_id(tokenizer)
    order = sorted(range(len(prompt_ids)), key=lambda i: (len(responses_token_ids[i]), len(prompt_ids[i])))
    result: list[torch.Tensor | None] = [None] * len(order)
    with torch.inference_mode(), evaluation_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            logprobs = _batch_logprobs(model, [prompt_ids[i] for i in rows], [responses_token_ids[i] for i in rows],
                                       padding_value)
            for row, values in zip(rows, logprobs):
                result[row] = values
    return result


def kl_to_reference(
    responses: Sequence[Response],
    ref_model,
    tokenizer,
    prompts: Sequence[str] | None = None,
    *,
    system_prompt: str | None = None,
    rendered: bool = False,
    batch_size: int = 16,
) -> np.ndarray:
    """Σ_t [logprob_sampled_t − log π_ref(a_t|s_t)] per response, as a float64 array.

    ``prompts`` are what π_ref is conditioned on (default: each response's own ``prompt``).
    """
    prompts = [r.prompt for r in responses] if prompts is None else list(prompts)
    reference = sequence_logprobs(
        ref_model,
        tokenizer,
        prompts,
        [r.token_ids for r in responses],
        system_prompt=system_prompt,
        rendered=rendered,
        batch_size=batch_size,
    )
    return np.array(
        [sum(r.logprobs) - float(ref.double().sum()) for r, ref in zip(responses, reference)],
        dtype=np.float64,
    )
