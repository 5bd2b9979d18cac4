"""Experience making for every RL method: sample, score, and read log-probabilities under π and π_ref.

As in OpenRLHF, making experience is separate from the optimisation step: :class:`ExperienceMaker`
turns prompts into an :class:`Experience` (a padded batch of rollouts with everything a policy-gradient
update needs), and each trainer (PPO, PPO-Lagrangian, REINFORCE/RLOO) only decides how to turn it
into a loss. The policy is a LoRA adapter on the base model (a ``PeftModel``); the reference π_ref is
the same weights with the adapters disabled (:func:`paretoalign.models.reference_mode`), so no second
copy of the model is held in memory.

Layout of a batch of B rollouts. ``sequences`` is (B, T): each prompt left-padded to the same length
P, then its response right-padded to A = T − P columns, so every response starts in column P. The
per-token tensors are (B, A) over those A action columns: entry ``[b, j]`` belongs to the token
``sequences[b, P + j]``, and ``action_mask[b, j]`` says whether that is a real response token (not
padding). The policy's log-probabilities are those of its full distribution at the rollout temperature
(the distribution sampled from, so the PPO ratio stays on-policy; rollouts use no top-k / top-p
truncation); π_ref's are those of its untempered distribution (METHODS.md, "KL to the reference").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from peft import PeftModel
from torch.nn.utils.rnn import pad_sequence

from ...core.errors import ConfigError, TrainingError
from ...core.preference import Preference
from ...generation import GenerationConfig, Response, generate, prompt_token_ids
from ...generation.chat import pad_id, pad_left
from ...generation.decoding import evaluation_mode
from ...generation.kl import token_logprobs
from ...models import reference_mode
from ...objectives import Objective, scalarize

Critic = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
"""``critic(sequences (B, T), attention_mask (B, T), policy hidden states (B, A, H)) -> {stream: values (B, A)}``:
value heads read on the policy's states, or separate critic networks read on the sequences."""


@dataclass
class Experience:
    """A padded batch of B rollouts (see the module docstring for the (B, T) / (B, A) layout).

    Tensors: ``sequences``/``attention_mask`` (B, T) prompt + response ids; ``action_mask`` (B, A) true on
    response tokens; ``old_logprobs``/``ref_logprobs`` (B, A) log π and log π_ref of each response token
    (0 on padding); ``rewards`` raw score (B,) per objective; ``normalized`` the objective's normalized,
    direction-corrected reward (B,); ``scalar_reward`` (B,) Σ w_i·normalized_i when the maker has a
    preference, else ``None``; ``costs`` raw score (B,) per cost objective; ``prompt_index`` (B,) which
    prompt of the call each rollout answers (rollouts of one prompt form an RLOO/GRPO group);
    ``values`` per-token critic values (B, A) by stream name (see ``ExperienceMaker``'s ``critic``);
    ``advantages`` (B, A) (or (B,) for sequence-level methods) and ``returns`` by stream, filled by the
    trainer before its update.
    Plain data: ``prompts`` (B,) the prompt text of each rollout, ``responses`` (B,) the sampled
    :class:`~paretoalign.generation.Response` objects, ``generated_tokens`` how many tokens were sampled.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    rewards: dict[str, torch.Tensor]
    normalized: dict[str, torch.Tensor]
    costs: dict[str, torch.Tensor]
    prompt_index: torch.Tensor
    scalar_reward: torch.Tensor | None = None
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    advantages: torch.Tensor | None = None
    returns: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    generated_tokens: int = 0

    @property
    def num_actions(self) -> int:
        """A: the number of response columns at the end of ``sequences``."""
        return self.action_mask.shape[1]

    @property
    def kl(self) -> torch.Tensor:
        """Per-token KL estimate log π − log π_ref (B, A), 0 on padding."""
        return (self.old_logprobs - self.ref_logprobs) * self.action_mask

    @property
    def response_lengths(self) -> torch.Tensor:
        """Response tokens per rollout (B,), counting a sampled EOS."""
        return self.action_mask.sum(dim=1)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def select(self, rows: torch.Tensor) -> "Experience":
        """The rollouts ``rows`` (indices) as a smaller Experience; padding columns are kept as they are."""
        picked = {}
        index = rows.tolist()
        for item in fields(self):
            value = getattr(self, item.name)
            if torch.is_tensor(value):
                picked[item.name] = value[rows]
            elif isinstance(value, dict):
                picked[item.name] = {key: tensor[rows] for key, tensor in value.items()}
            elif isinstance(value, list) and value:
                picked[item.name] = [value[i] for i in index]
        return replace(self, **picked)

    def minibatches(self, size: int, generator: torch.Generator | None = None) -> Iterator["Experience"]:
        """The rollouts in a shuffled order (``generator`` makes it repeatable), ``size`` at a time."""
        if size < 1:
            raise ConfigError(f"minibatch size must be >= 1, got {size}")
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), size):
            yield self.select(order[start : start + size])

    def to(self, device: torch.device | str) -> "Experience":
        """The same experience with every tensor on ``device``."""
        moved = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if torch.is_tensor(value):
                moved[item.name] = value.to(device)
            elif isinstance(value, dict):
                moved[item.name] = {key: tensor.to(device) for key, tensor in value.items()}
        return replace(self, **moved)


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the LM head of a causal LM (a PeftModel's LoRA layers live inside them)."""
    hf_model = model.get_base_model() if isinstance(model, PeftModel) else model
    backbone = getattr(hf_model, hf_model.base_model_prefix, None)
    head = hf_model.get_output_embeddings()
    if backbone is None or head is None:
        raise ConfigError(f"{type(hf_model).__name__} is not a causal LM with an output head; load a causal LM")
    return backbone, head


def action_hidden_states(
    model: torch.nn.Module, sequences: torch.Tensor, attention_mask: torch.Tensor, num_actions: int
) -> torch.Tensor:
    """Last hidden state at the A positions that predict the A response tokens: (B, A, H).

    Position P + j − 1 reads the prompt and the first j response tokens, so it is the state in which
    response token j is chosen (where the policy's logits and a critic's value are read).
    """
    backbone, _ = causal_lm_parts(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(
        input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return hidden[:, -num_actions - 1 : -1]


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution (B, A), in nats."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -(logprobs.exp() * logprobs).sum(dim=-1)


def logprobs_from_hidden(
    model: torch.nn.Module, hidden: torch.Tensor, sequences: torch.Tensor, action_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The LM head on :func:`action_hidden_states` output: log-probs of the response tokens (B, A) at
    ``temperature``."""
    _, head = causal_lm_parts(model)
    num_actions = action_mask.shape[1]
    return token_logprobs(head(hidden), sequences[:, -num_actions:], temperature) * action_mask


def rollout_batch(
    prompt_ids: Sequence[Sequence[int]], responses: Sequence[Response], padding_value: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sequences, attention_mask, action_mask)`` of prompts left-padded and responses right-padded."""
    prompts, prompt_mask = pad_left(prompt_ids, padding_value)
    rows = [torch.tensor(r.token_ids or [padding_value], dtype=torch.long) for r in responses]
    response_ids = pad_sequence(rows, batch_first=True, padding_value=padding_value)
    action_mask = pad_sequence(
        [torch.ones(len(r.token_ids), dtype=torch.bool) if r.token_ids else torch.zeros(1, dtype=torch.bool)
         for r in responses],
        batch_first=True,
    )
    attention_mask = torch.cat([prompt_mask, action_mask.long()], dim=1)
    return torch.cat([prompts, response_ids], dim=1), attention_mask, action_mask


def checked_scores(objective: Objective, prompts: Sequence[str], texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Raw scores of ``objective`` computed ``batch_size`` pairs at a time; TrainingError on NaN/inf."""
    chunks = [
        np.asarray(objective.score(prompts[start : start + batch_size], texts[start : start + batch_size]),
                   dtype=np.float64).reshape(-1)
        for start in range(0, len(texts), batch_size)
    ]
    scores = np.concatenate(chunks) if chunks else np.zeros(0)
    if scores.shape != (len(texts),):
        raise TrainingError(
            f"objective {objective.name!r} returned {scores.size} scores for {len(texts)} responses; "
            "a scorer must return one score per response"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise TrainingError(
            f"objective {objective.name!r} returned {scores[bad[0]]} for response {int(bad[0])} "
            f"({bad.size} non-finite scores); fix the scorer or drop the objective"
        )
    return scores


class ExperienceMaker:
    """Rollouts of a LoRA policy, scored by objectives, with log-probabilities under π and π_ref.

    ``objectives`` are rewards (normalized with their stored statistics, which they must carry);
    ``preference`` (optional) scalarizes them into ``scalar_reward``; ``cost_objectives`` are scored raw
    into ``costs``. ``score_batch_size`` bounds the pairs per scorer call, ``forward_batch_size`` the
    rollouts per teacher-forced forward pass; ``system_prompt`` is the chat system message of the policy;
    ``temperature`` the rollout temperature, at which the policy's log-probabilities are read (π_ref's at 1).
    ``critic`` (optional, see :data:`Critic`) gives per-token values by stream name, read in the same
    forward batches as the old log-probabilities (they land in ``Experience.values``).
    """

    def __init__(
        self,
        policy: PeftModel,
        tokenizer,
        objectives: Sequence[Objective],
        *,
        preference: Preference | str | Mapping[str, float] | None = None,
        cost_objectives: Sequence[Objective] = (),
        score_batch_size: int = 64,
        forward_batch_size: int = 8,
        system_prompt: str | None = None,
        critic: Critic | None = None,
        temperature: float = 1.0,
    ) -> None:
        if not isinstance(policy, PeftModel):
            raise ConfigError("RL needs the policy as a LoRA adapter on the base model; attach one with attach_lora")
        if score_batch_size < 1 or forward_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {score_batch_size} and {forward_batch_size}")
        if temperature <= 0:
            raise ConfigError(f"the rollout temperature must be > 0, got {temperature}")
        names = [o.name for o in objectives]
        self.preference = None if preference is None else Preference.parse(preference, known=names)
        self.policy = policy
        self.tokenizer = tokenizer
        self.objectives = list(objectives)
        self.cost_objectives = list(cost_objectives)
        self.score_batch_size = score_batch_size
        self.forward_batch_size = forward_batch_size
        self.system_prompt = system_prompt
        self.critic = critic
        self.temperature = temperature
        self.last_timings: dict[str, float] = {}
        """Seconds of each phase of the last ``make``: generation, scoring, policy_logprobs, reference_logprobs."""

    def make(
        self, prompts: Sequence[str], generation_config: GenerationConfig, samples_per_prompt: int = 1
    ) -> Experience:
        """Sample ``samples_per_prompt`` responses per prompt, score them and read π / π_ref log-probs."""
        if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
            raise ConfigError(f"samples_per_prompt must be a whole number >= 1, got {samples_per_prompt!r}")
        if not prompts:
            raise ConfigError("no prompts to make experience from; give at least one")
        prompt_index = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
        rollout_prompts = [prompts[i] for i in prompt_index]
        config = replace(generation_config, system_prompt=self.system_prompt)
        clock = _PhaseClock()
        responses = generate(self.policy, self.tokenizer, rollout_prompts, config)
        clock.lap("generation")
        texts = [response.text for response in responses]
        raw = {o.name: checked_scores(o, rollout_prompts, texts, self.score_batch_size) for o in self.objectives}
        normalized = {o.name: o.normalize(raw[o.name]) for o in self.objectives}
        costs = {o.name: checked_scores(o, rollout_prompts, texts, self.score_batch_size) for o in self.cost_objectives}
        clock.lap("scoring")
        prompt_ids = prompt_token_ids(self.tokenizer, rollout_prompts, self.system_prompt)
        sequences, attention_mask, action_mask = rollout_batch(prompt_ids, responses, pad_id(self.tokenizer))
        old_logprobs, values = self.teacher_forced(sequences, attention_mask, action_mask, self.critic,
                                                   self.temperature)
        clock.lap("policy_logprobs")
        with reference_mode(self.policy):
            ref_logprobs, _ = self.teacher_forced(sequences, attention_mask, action_mask)
        clock.lap("reference_logprobs")
        self.last_timings = clock.seconds
        return Experience(
            sequences=sequences,
            attention_mask=attention_mask,
            action_mask=action_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            rewards=_as_tensors(raw),
            normalized=_as_tensors(normalized),
            costs=_as_tensors(costs),
            prompt_index=torch.tensor(prompt_index, dtype=torch.long),
            scalar_reward=None if self.preference is None else _as_tensor(scalarize(normalized, self.preference)),
            values=values,
            prompts=rollout_prompts,
            responses=responses,
            generated_tokens=sum(len(response.token_ids) for response in responses),
        )

    @torch.inference_mode()
    def teacher_forced(
        self,
        sequences: torch.Tensor,
        attention_mask: torch.Tensor,
        action_mask: torch.Tensor,
        critic: Critic | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Log-probs (B, A) at ``temperature`` of the policy as it is now (adapters on or off) and ``critic``'s
        values, in eval mode, ``forward_batch_size`` rollouts at a time, returned on CPU."""
        device = self.policy.device
        logprobs, values = [], []
        with evaluation_mode(self.policy):
            for start, stop in _spans(len(sequences), self.forward_batch_size):
                rows = [t[start:stop].to(device) for t in (sequences, attention_mask, action_mask)]
                hidden = action_hidden_states(self.policy, rows[0], rows[1], action_mask.shape[1])
                logprobs.append(logprobs_from_hidden(self.policy, hidden, rows[0], rows[2], temperature).cpu())
                values.append({k: v.float().cpu() for k, v in critic(rows[0], rows[1], hidden).items()}
                              if critic else {})
        return torch.cat(logprobs), {name: torch.cat([chunk[name] for chunk in values]) for name in values[0]}


class _PhaseClock:
    """Seconds spent in consecutive named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _as_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def _as_tensors(values: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: _as_tensor(array) for name, array in values.items()}
