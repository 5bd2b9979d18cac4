"""PPO with a critic on a LoRA policy, and MORLHF: PPO on Σ w_i·normalized r_i for one preference.

One iteration (one ``step`` in ``metrics.jsonl``): take ``batch_size`` prompts, make experience
(:class:`~paretoalign.training.rl.experience.ExperienceMaker`: sample, score with every objective,
log-probs under π and π_ref, old values), build token rewards (−β·KL on every response token plus the
sequence reward on the last one), GAE advantages, then ``ppo_epochs`` passes of clipped-surrogate +
clipped-value updates over shuffled minibatches; with ``early_stopping`` the remaining epochs of a batch
are skipped once the policy KL of an epoch's last minibatch exceeds 1.5 × ``target_kl`` (as TRL's
former ``PPOTrainer``, which the MORLHF original ran). The KL coefficient β is fixed or adapted towards
``kl_target`` (Ziegler et al.). Sequence rewards can be whitened per batch or with running moments.
Log-probabilities are read at the rollout ``temperature``, so sampling at T ≠ 1 stays on-policy.

The critic is a scalar value head per reward stream (a zero-initialised linear layer) on the policy's
own last hidden state, i.e. on the same LoRA'd base: one forward pass gives log-probs and values, and
the value loss (weighted by ``vf_coef``) also trains the shared LoRA, as in TRL's former
``AutoModelForCausalLMWithValueHead``. Heads are saved next to the adapter as ``value_heads.safetensors``.
A subclass may give a stream its own critic network instead (:meth:`PPOTrainer.make_critics`; PPO-Lag does).

Rewards use each objective's normalization statistics; objectives that come without them get them
fitted at the start on the reference model's responses to the first ``norm_prompts`` training prompts,
and the statistics are stored in the run manifest (``normalization``).

Rollouts, old and reference log-probs run under the same ``accelerator.autocast()`` as the update, so
with ``--mixed-precision bf16`` the PPO ratio still starts at exactly 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from peft import PeftModel
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ...core.errors import ConfigError
from ...core.files import atomic_path
from ...core.preference import Preference
from ...core.rundir import MANIFEST
from ...generation import GenerationConfig, generate, prompt_token_ids
from ...models import reference_mode
from ...objectives import Objective, apply_stats, fit_all, load_objectives, stats_to_dict
from ..base import DataReport, MetricWindow, Trainer, load_causal_lm, make_trainable
from ..config import TrainConfig
from ...generation.kl import token_logprobs
from .experience import Experience, ExperienceMaker, action_hidden_states, token_entropy
from .functional import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    clipped_surrogate_loss,
    clipped_value_loss,
    gae_advantages,
    masked_mean,
    masked_whiten,
    token_rewards,
)
from .ptx import PTXBatches

REWARD_NORMS = ("none", "batch", "running")
VALUE_HEADS = "value_heads.safetensors"
CRITICS = "critics.safetensors"
REWARD_STREAM = "reward"


@dataclass
class PPOConfig(TrainConfig):
    """PPO on a LoRA policy with a value head; the reward is Σ w_i·normalized r_i over --objectives."""

    objectives: str = field(default="relevance", metadata={"help": "objective specs, comma-separated"})
    preference: str | None = field(
        default=None, metadata={"help": "weights over the objectives, e.g. a=0.7,b=0.3 (default: equal)"}
    )
    dataset: list[str] = field(default_factory=lambda: ["instructions"], metadata={"help": "prompt data"})
    output_dir: str = field(default="runs/ppo", metadata={"help": "run directory"})
    batch_size: int = field(default=8, metadata={"help": "prompts per PPO iteration (per device)"})
    samples_per_prompt: int = field(default=1, metadata={"help": "responses sampled per prompt"})
    minibatch_size: int = field(default=4, metadata={"help": "rollouts per optimizer step"})
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each batch of experience"})
    max_steps: int = field(default=20, metadata={"help": "PPO iterations; 0 = from epochs over the prompts"})
    max_new_tokens: int = field(default=48, metadata={"help": "tokens sampled per response at most"})
    max_length: int = field(default=256, metadata={"help": "prompt tokens at most; longer prompts are skipped"})
    temperature: float = field(default=1.0, metadata={"help": "rollout temperature (1 keeps PPO on-policy)"})
    gamma: float = field(default=1.0, metadata={"help": "discount γ of GAE"})
    gae_lambda: float = field(default=0.95, metadata={"help": "λ of GAE"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip ε"})
    early_stopping: bool = field(default=False, metadata={"help": "skip a batch's remaining PPO epochs once the "
                                                          "policy KL exceeds 1.5 × target_kl (TRL's)"})
    target_kl: float = field(default=1.0, metadata={"help": "policy KL per token that early stopping guards"})
    value_clip_range: float = field(default=0.2, metadata={"help": "value clip around the old values"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    entropy_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    kl_coef: float = field(default=0.05, metadata={"help": "KL penalty β per token (initial value if adaptive)"})
    kl_target: float = field(default=0.0, metadata={"help": "adapt β to this KL per response; 0 = fixed β"})
    kl_horizon: int = field(default=10000, metadata={"help": "horizon of the adaptive KL controller"})
    reward_norm: str = field(default="none", metadata={"help": f"sequence reward whitening: {', '.join(REWARD_NORMS)}"})
    whiten_advantages: bool = field(default=True, metadata={"help": "whiten advantages per batch"})
    norm_prompts: int = field(default=32, metadata={"help": "train prompts for fitting reward normalization"})
    score_batch_size: int = field(default=64, metadata={"help": "responses per scorer call"})
    forward_batch_size: int = field(default=8, metadata={"help": "rollouts per generation/teacher-forcing batch"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})
    ptx_coef: float = field(default=0.0, metadata={"help": "weight of the PTX language-modelling loss; 0 = off"})
    ptx_dataset: list[str] = field(default_factory=list, metadata={"help": "(prompt, response) data for PTX"})
    ptx_batch_size: int = field(default=4, metadata={"help": "PTX records per optimizer step"})
    scheduler: str = field(default="constant", metadata={"help": "LR schedule over PPO iterations"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.full_finetune:
            raise ConfigError("RL trains a LoRA adapter (the reference is the base with it disabled); drop --full-finetune")
        if self.grad_accum != 1:
            raise ConfigError("grad_accum does not apply to RL; set the rollouts per update with --minibatch-size")
        if self.reward_norm not in REWARD_NORMS:
            raise ConfigError(f"reward_norm {self.reward_norm!r} is not one of {', '.join(REWARD_NORMS)}")
        for name in ("samples_per_prompt", "minibatch_size", "ppo_epochs", "max_new_tokens", "norm_prompts",
                     "score_batch_size", "forward_batch_size", "kl_horizon"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "clip_range", "value_clip_range", "target_kl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("kl_coef", "kl_target", "vf_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ConfigError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma} and {self.gae_lambda}")
        if self.preference is not None:
            Preference.parse(self.preference)
        if self.ptx_coef < 0 or self.ptx_batch_size < 1:
            raise ConfigError(f"ptx_coef must be >= 0 and ptx_batch_size >= 1, got {self.ptx_coef} and "
                              f"{self.ptx_batch_size}")
        if self.ptx_coef > 0 and not self.ptx_dataset:
            raise ConfigError("ptx_coef > 0 needs --ptx-dataset with (prompt, response) records")


@dataclass
class MORLHFConfig(PPOConfig):
    """MORLHF: PPO on the scalarized reward Σ w_i·normalized r_i of one --preference."""

    objectives: str = field(default="conciseness,relevance", metadata={"help": "objective specs, comma-separated"})
    output_dir: str = field(default="runs/morlhf", metadata={"help": "run directory"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preference is None:
            raise ConfigError("morlhf needs --preference, e.g. --preference conciseness=0.7,relevance=0.3")


@dataclass
class ActorCriticOutput:
    """Per-token log-probs (B, A), entropies (B, A) and values (B, A) by stream, from one forward pass."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: dict[str, torch.Tensor]


class ActorCritic(torch.nn.Module):
    """The LoRA policy, a zero-initialised scalar value head on its last hidden state per stream, and
    separate critic networks (``critics``, read on the sequences) for the streams that have one."""

    def __init__(self, policy: PeftModel, streams: Sequence[str], critics: dict[str, torch.nn.Module] | None = None,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        self.critics = torch.nn.ModuleDict(critics or {})
        self.value_heads = torch.nn.ModuleDict(
            {name: torch.nn.Linear(policy.config.hidden_size, 1) for name in streams if name not in self.critics}
        )
        for head in self.value_heads.values():
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        self.value_heads.to(policy.device)

    def values(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, hidden: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every stream's value (B, A): heads at the policy's hidden states (B, A, H), critics on the sequences."""
        values = {name: head(hidden.float()).squeeze(-1) for name, head in self.value_heads.items()}
        for name, critic in self.critics.items():
            values[name] = critic(sequences, attention_mask, hidden.shape[1])
        return values

    def forward(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor, entropy_grad: bool = False
    ) -> ActorCriticOutput:
        num_actions = action_mask.shape[1]
        hidden = action_hidden_states(self.policy, sequences, attention_mask, num_actions)
        logits = self.policy.get_output_embeddings()(hidden).float() / self.temperature
        logprobs = token_logprobs(logits, sequences[:, -num_actions:]) * action_mask
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = token_entropy(logits if entropy_grad else logits.detach())
        return ActorCriticOutput(logprobs, entropy, self.values(sequences, attention_mask, hidden))


def as_lora_policy(model: torch.nn.Module, config: TrainConfig) -> PeftModel:
    """``model`` as a LoRA policy: a PeftModel as given, a plain model with a fresh adapter."""
    return model if isinstance(model, PeftModel) else make_trainable(model, config)


class PPOTrainer(Trainer):
    """PPO with a value head on the policy; see the module docstring. ``objectives=`` may pass loaded
    objectives (with or without normalization statistics) instead of ``config.objectives``."""

    kind = "ppo"
    required_columns = ("prompt",)
    streams: ClassVar[tuple[str, ...]] = (REWARD_STREAM,)

    def __init__(
        self,
        config: PPOConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        objectives: Sequence[Objective] | None = None,
    ) -> None:
        self.objectives = list(objectives) if objectives is not None else load_objectives(config.objectives)
        names = [o.name for o in self.objectives]
        weights = config.preference or {name: 1.0 for name in names}
        self.preference = Preference.parse(weights, known=names, normalize=config.preference is None)
        super().__init__(config, train_data, eval_data, model=model, tokenizer=tokenizer)
        self.model = ActorCritic(as_lora_policy(self.model, config), self.streams, self.make_critics(),
                                 config.temperature)
        if config.kl_target > 0:
            self.kl_controller = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(config.kl_coef)
        self.reward_moments = RunningMoments()
        self.generated_tokens = 0
        self.ptx = self._ptx_batches() if config.ptx_coef > 0 else None

    def _ptx_batches(self) -> PTXBatches:
        from ...data import load_mixture

        config = self.config
        return PTXBatches(load_mixture(config.ptx_dataset, seed=config.seed), self.tokenizer, config.ptx_batch_size,
                          config.max_length, config.system_prompt)

    # ------------------------------------------------------------ what the base loop asks for

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        return load_causal_lm(self.config)

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        prompt = record["prompt"]
        if len(prompt_token_ids(self.tokenizer, [prompt], self.config.system_prompt)[0]) > self.config.max_length:
            report.skip("prompt longer than max_length")
            return None
        return {"prompt": prompt}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """RL batches are prompts; experience is made from them by :meth:`make_experience`."""
        return {"prompts": [example["prompt"] for example in examples]}

    @property
    def actor_critic(self) -> ActorCritic:
        return self.unwrapped_model

    def cost_objectives(self) -> list[Objective]:
        """Objectives scored raw into ``Experience.costs`` (none for plain PPO)."""
        return []

    def make_critics(self) -> dict[str, torch.nn.Module]:
        """Separate critic networks by stream (none: every stream gets a value head on the policy)."""
        return {}

    def before_training(self) -> None:
        self.ensure_normalization()
        config = self.config
        self.maker = ExperienceMaker(
            self.actor_critic.policy, self.tokenizer, self.objectives, preference=self.preference,
            cost_objectives=self.cost_objectives(), score_batch_size=config.score_batch_size,
            forward_batch_size=config.forward_batch_size, system_prompt=config.system_prompt,
            critic=self.actor_critic.values, temperature=config.temperature,
        )

    # ------------------------------------------------------------ normalization

    def ensure_normalization(self) -> None:
        """Give every objective normalization statistics (from the manifest of the run being resumed,
        else fitted on the reference's responses) and record them in the manifest."""
        missing = [o for o in self.objectives if o.stats is None]
        saved = self._saved_normalization() if self.config.resume else None
        if missing and saved:
            apply_stats(missing, saved)
        elif missing:
            prompts = [example["prompt"] for example in self.train_examples[: self.config.norm_prompts]]
            policy = self.actor_critic.policy
            with reference_mode(policy), self.accelerator.autocast():
                responses = generate(policy, self.tokenizer, prompts, self.generation_config(self.config.seed))
            fit_all(missing, prompts, [r.text for r in responses],
                    source=f"reference responses to {len(prompts)} train prompts")
        if self.run is not None:
            self.run.manifest["normalization"] = stats_to_dict(self.objectives)
            self.run.save_manifest()

    def _saved_normalization(self) -> dict[str, Any] | None:
        manifest = Path(self.config.output_dir) / MANIFEST
        if not manifest.is_file():
            return None
        return json.loads(manifest.read_text(encoding="utf-8")).get("normalization")

    # ------------------------------------------------------------ one iteration

    def generation_config(self, seed: int) -> GenerationConfig:
        """Untruncated sampling at the rollout temperature, seeded, with the run's system prompt (so the
        normalization statistics are fitted on the same prompts the rollouts see)."""
        config = self.config
        return GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_k=0,
                                top_p=1.0, seed=seed, batch_size=config.forward_batch_size,
                                system_prompt=config.system_prompt)

    def iteration_seed(self, salt: int = 0) -> int:
        """A seed for this iteration on this rank, so a resumed run draws what an uninterrupted one does."""
        return ((self.config.seed * 1_000_003 + self.state.step) * 8191 + self.accelerator.process_index) * 4 + salt

    def make_experience(self, prompts: Sequence[str]) -> Experience:
        """Rollouts of the current policy on ``prompts`` with advantages and returns filled in."""
        with self.accelerator.autocast():
            experience = self.maker.make(prompts, self.generation_config(self.iteration_seed()),
                                         self.config.samples_per_prompt)
        self.generated_tokens += self._sum_over_ranks(experience.generated_tokens)
        return self.add_advantages(experience)

    def sequence_reward(self, experience: Experience) -> torch.Tensor:
        """The scalarized normalized reward (B,), whitened as ``reward_norm`` asks."""
        scores = experience.scalar_reward
        if self.config.reward_norm == "batch":
            return (scores - scores.mean()) / scores.std(unbiased=False).clamp(min=1e-6)
        if self.config.reward_norm == "running":
            self.reward_moments.update(self.accelerator.gather(scores.to(self.accelerator.device)).cpu())
            return self.reward_moments.whiten(scores)
        return scores

    def add_advantages(self, experience: Experience) -> Experience:
        """GAE on token rewards −β·KL (+ the sequence reward at the end), whitened if configured."""
        config, mask = self.config, experience.action_mask
        rewards = token_rewards(self.sequence_reward(experience), -self.kl_controller.value * experience.kl, mask)
        advantages, returns = gae_advantages(rewards, experience.values[REWARD_STREAM], mask, config.gamma,
                                             config.gae_lambda)
        experience.advantages = masked_whiten(advantages, mask) if config.whiten_advantages else advantages
        experience.returns = {REWARD_STREAM: returns}
        return experience

    def compute_loss(self, batch: Experience) -> tuple[torch.Tensor, dict[str, Any]]:
        """Clipped surrogate + vf_coef · clipped value loss(es) − entropy_coef · entropy on a minibatch."""
        config, mask = self.config, batch.action_mask
        output = self.model(batch.sequences, batch.attention_mask, mask, entropy_grad=config.entropy_coef > 0)
        policy_loss, metrics = clipped_surrogate_loss(output.logprobs, batch.old_logprobs, batch.advantages, mask,
                                                      config.clip_range)
        value_loss = output.logprobs.new_zeros(())
        for stream in self.streams:
            stream_loss, clipped = clipped_value_loss(output.values[stream], batch.values[stream],
                                                      batch.returns[stream], mask, config.value_clip_range)
            value_loss = value_loss + stream_loss
            metrics[f"value_loss/{stream}"] = stream_loss.detach()
            metrics[f"value_clip_frac/{stream}"] = clipped
        entropy = masked_mean(output.entropy, mask)
        loss = policy_loss + config.vf_coef * value_loss - config.entropy_coef * entropy
        metrics.update(policy_loss=policy_loss.detach(), value_loss=value_loss.detach(), entropy=entropy.detach())
        return self.add_ptx_loss(loss, metrics), metrics

    def add_ptx_loss(self, loss: torch.Tensor, metrics: dict[str, Any]) -> torch.Tensor:
        """``loss`` + ``ptx_coef`` × the language-modelling loss of the next PTX batch (``loss`` when PTX is off)."""
        if self.ptx is None:
            return loss
        ptx_loss = self.actor_critic.policy(**self.ptx.next_batch(self.accelerator.device), use_cache=False).loss
        metrics["ptx_loss"] = ptx_loss.detach()
        return loss + self.config.ptx_coef * ptx_loss

    def optimize(self, experience: Experience) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """Up to ``ppo_epochs`` passes over shuffled minibatches, one optimizer step each (fewer with early
        stopping); returns the mean loss, the mean metrics (with ``ppo_epochs_run``) and the tokens trained on
        (this rank)."""
        config, device = self.config, self.accelerator.device
        generator = torch.Generator().manual_seed(self.iteration_seed(salt=1))
        window = MetricWindow()
        self.model.train()
        epochs = 0
        while epochs < config.ppo_epochs:
            epochs += 1
            for minibatch in experience.minibatches(config.minibatch_size, generator):
                loss, metrics = self.compute_loss(minibatch.to(device))
                self.check_finite(loss, "loss")
                self.accelerator.backward(loss)
                self.optimizer_step(step_scheduler=False)
                window.add(loss, metrics)
            if config.early_stopping and self.policy_kl_too_high(metrics["policy_kl"]):
                break
        means = {key: value / window.count for key, value in window.sums.items()}
        means["ppo_epochs_run"] = torch.tensor(float(epochs))
        return means.pop("loss"), means, epochs * int(experience.attention_mask.sum())

    def policy_kl_too_high(self, policy_kl: torch.Tensor) -> bool:
        """TRL's early stop: the last minibatch's policy KL (mean log π_old − log π) above 1.5 × target_kl on
        any rank."""
        too_high = (policy_kl.detach().float() > 1.5 * self.config.target_kl).reshape(1).to(self.accelerator.device)
        return bool(self.accelerator.gather(too_high).any())

    def rollout_metrics(self, experience: Experience) -> dict[str, torch.Tensor]:
        """Means over the batch: each objective's raw and normalized reward, the scalar reward, KL per
        response (log π − log π_ref summed over its tokens), response length."""
        metrics = {f"reward/{name}": value.mean() for name, value in experience.rewards.items()}
        metrics.update({f"normalized/{name}": value.mean() for name, value in experience.normalized.items()})
        metrics.update({f"cost/{name}": value.mean() for name, value in experience.costs.items()})
        metrics["score"] = experience.scalar_reward.mean()
        metrics["kl"] = experience.kl.sum(dim=1).mean()
        metrics["response_length"] = experience.response_lengths.float().mean()
        return metrics

    def after_iteration(self, experience: Experience, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        """Adapt β to the measured KL; returns values to log with the step."""
        kl = float(self.accelerator.reduce(rollout["kl"].to(self.accelerator.device), "mean"))
        logged = {"kl_coef": self.kl_controller.value}
        self.kl_controller.update(kl, len(experience) * self.accelerator.num_processes)
        return logged

    def training_loop(self, total: int, progress: tqdm) -> MetricWindow:
        """PPO iterations over batches of prompts until ``total`` iterations are done."""
        window = MetricWindow()
        for micro_step, examples in self._micro_batches(self.state.micro_step):
            if self.state.step >= total:
                break
            experience = self.make_experience([example["prompt"] for example in examples])
            lr, started = self.scheduler.get_last_lr()[0], time.perf_counter()
            loss, metrics, tokens = self.optimize(experience)
            self.scheduler.step()
            timings = {**self.maker.last_timings, "optimization": time.perf_counter() - started}
            rollout = self.rollout_metrics(experience)
            window.add(loss, {**rollout, **metrics})
            step_info = {"lr": lr, **self.after_iteration(experience, rollout), "generated_tokens": self.generated_tokens,
                         **{f"seconds/{phase}": round(value, 3) for phase, value in timings.items()}}
            self.state.micro_step = micro_step + 1
            self.complete_step(window, step_info, tokens, total, progress)
        return window

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Rollout metrics on the evaluation prompts (fixed seed), averaged over ranks."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        prompts = [example["prompt"] for example in self.eval_examples[rank::world] or self.eval_examples[:1]]
        with self.accelerator.autocast():
            experience = self.maker.make(prompts, self.generation_config(self.config.seed), 1)
        window = MetricWindow()
        metrics = self.rollout_metrics(experience)
        window.add(metrics.pop("score"), metrics)
        means = window.flush(self.accelerator)
        means["score"] = means.pop("loss")
        return {f"eval_{key}": value for key, value in means.items()}

    # ------------------------------------------------------------ state and outputs

    def extra_state(self) -> dict[str, Any]:
        return {"kl_controller": self.kl_controller.state_dict(), "reward_moments": self.reward_moments.state_dict(),
                "generated_tokens": self.generated_tokens, "ptx_position": self.ptx.position if self.ptx else 0}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.generated_tokens = int(state["generated_tokens"])
        if self.ptx is not None:
            self.ptx.position = int(state.get("ptx_position", 0))

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "objectives": [o.name for o in self.objectives],
            "preference": self.preference.as_dict(),
            "normalization": stats_to_dict(self.objectives),
            "generated_tokens": self.generated_tokens,
            "kl_coef": self.kl_controller.value,
        }

    def saved_model_kind(self) -> str:
        return "adapter"

    def save_model(self, directory: Path) -> None:
        """The policy's LoRA adapter folder + tokenizer, with the value heads in ``value_heads.safetensors`` and
        the trainable weights of separate critics in ``critics.safetensors``."""
        parts = {VALUE_HEADS: self.actor_critic.value_heads, CRITICS: self.actor_critic.critics}
        with atomic_path(directory) as staged:
            self.actor_critic.policy.save_pretrained(staged, safe_serialization=True)
            self.tokenizer.save_pretrained(staged)
            for filename, module in parts.items():
                trainable = {name: param.detach().cpu().contiguous()
                             for name, param in module.named_parameters() if param.requires_grad}
                if trainable:
                    save_file(trainable, str(staged / filename))


class MORLHFTrainer(PPOTrainer):
    """MORLHF (METHODS.md): PPO on Σ w_i·normalized r_i for the one preference of ``config.preference``."""

    kind = "morlhf"
