"""The one training loop every paretoalign trainer runs (SFT, reward/cost/value models, the DPO family).

Why our own loop instead of subclassing TRL's trainers: TRL 1.16 has SFT, reward and DPO trainers on
top of ``transformers.Trainer``, but (1) it has no cost model with the signed Safe-RLHF loss, no value
regression, no per-pair/adaptive/EMA margins and no MODPO, so half our losses would need a second
loop anyway; (2) ``transformers.Trainer`` writes checkpoints in place (a kill mid-save leaves a broken
``checkpoint-N`` that resume picks up), while ours are staged and renamed atomically and refuse to resume
under a changed config; (3) one short loop (nanoGPT style) keeps every recipe's training readable and
identical across methods. TRL stays the oracle in tests (same losses on the same batch) and the peer in
``benchmarks/train_throughput.py``. Distribution comes from ``accelerate``: the same loop runs under
``accelerate launch`` / ``torchrun`` with DDP, FSDP or DeepSpeed.

A trainer subclass supplies ``encode`` (record -> token ids), ``collate`` (examples -> tensors) and
``compute_loss`` (batch -> ``(loss, metrics)``); this module does the rest.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..core.errors import ConfigError, DataError, TrainingError
from ..core.files import atomic_path, write_json_atomic, write_text_atomic
from ..core.rundir import METRICS, RunDirectory
from ..core.runtime import set_seed
from .config import TrainConfig, resume_mismatch

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
FINAL_MODEL = "model"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainState:
    """Where training stands: optimizer steps, micro-batches consumed (the data position), tokens seen."""

    step: int = 0
    micro_step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0


@dataclass
class DataReport:
    """What preprocessing dropped or changed, reported in the manifest and the final result."""

    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    model_dir: Path
    steps: int
    trained_tokens: int
    metrics: dict[str, float]
    data: DataReport
    generated_tokens: int = 0
    """Tokens the trainer sampled itself (RL rollouts); 0 for offline trainers."""
    wall_time_s: float = 0.0

    @property
    def compute(self) -> dict[str, float]:
        """The run's cost as every stage record counts it (``core.rundir.COMPUTE_KEYS``)."""
        return {"generated_tokens": self.generated_tokens, "trained_tokens": self.trained_tokens,
                "wall_time_s": round(self.wall_time_s, 3)}


def as_record_dict(record: Any) -> dict[str, Any]:
    """A record (data-layer dataclass or mapping) as a plain dict; extra columns kept in ``meta`` are lifted."""
    if hasattr(record, "to_dict"):
        record = record.to_dict()
    if isinstance(record, Mapping):
        meta = record.get("meta")
        return {**meta, **record} if isinstance(meta, Mapping) else dict(record)
    raise DataError(f"a training record must be a mapping or a data-layer record, got {type(record).__name__}")


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters the optimizer updates (the LoRA adapter, a score head, or everything)."""
    return [param for param in model.parameters() if param.requires_grad]


class Trainer(ABC):
    """Accelerate-driven loop: accumulation, mixed precision, schedule, clipping, eval, atomic checkpoints."""

    kind: ClassVar[str] = "train"
    required_columns: ClassVar[tuple[str, ...]] = ()
    generated_tokens: int = 0
    """Tokens sampled by the trainer itself (RL rollouts count theirs); reported in ``TrainResult.compute``."""

    def __init__(
        self,
        config: TrainConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.config = config
        self.accelerator = _make_accelerator(config)
        set_seed(config.seed)
        if model is None or tokenizer is None:
            model, tokenizer = self.load_model()
        self.model = model
        self.tokenizer = tokenizer
        self.data_report = DataReport()
        self.train_examples = self._prepare(train_data, self.data_report, "training")
        self.eval_examples = self._prepare(eval_data, DataReport(), "evaluation") if eval_data else []
        self.state = TrainState()

    # ------------------------------------------------------------ what a trainer supplies

    @abstractmethod
    def load_model(self) -> tuple[torch.nn.Module, Any]:
        """The model to train (with its adapter attached) and its tokenizer, from ``self.config``."""

    @abstractmethod
    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        """One record as token ids; ``None`` skips it (after ``report.skip(reason)``)."""

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Examples as one padded batch of tensors."""

    @abstractmethod
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The scalar loss of a batch and detached metrics to log."""

    def finalize_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hook run on the encoded examples before batching (SFT packs them here)."""
        return examples

    def before_training(self) -> None:
        """Hook run once the model is prepared, before a checkpoint is restored (e.g. score the reference)."""

    def on_optimizer_step(self) -> None:
        """Hook run after each optimizer step (e.g. an EMA reference update)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (one at ``config.lr``; PPO-Lag gives its critics their own rate)."""
        return [{"params": trainable_parameters(self.model)}]

    def extra_state(self) -> dict[str, Any]:
        """Tensors or values a trainer keeps across steps, saved in checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def manifest_fields(self) -> dict[str, Any]:
        """Trainer-specific manifest entries (e.g. the objective a score model becomes)."""
        return {}

    # ------------------------------------------------------------ data

    def _prepare(self, records: Sequence[Any], report: DataReport, split: str) -> list[dict[str, Any]]:
        rows = [as_record_dict(record) for record in records]
        if not rows:
            raise DataError(f"the {split} data is empty; give at least one record")
        missing = [column for column in self.required_columns if column not in rows[0] or rows[0][column] is None]
        if missing:
            raise DataError(
                f"{self.kind} {split} data misses column(s) {', '.join(missing)}; "
                f"each record needs {', '.join(self.required_columns)}"
            )
        encoded = [example for row in rows if (example := self.encode(row, report)) is not None]
        report.examples = len(encoded)
        if not encoded:
            raise DataError(f"every {split} record was skipped ({report.skipped}); check the data")
        return self.finalize_examples(encoded)

    def truncate(self, ids: list[int], report: DataReport, limit: int | None = None) -> list[int]:
        """``ids`` cut to ``limit`` (default max_length) tokens, counting the cut in ``report``."""
        limit = limit or self.config.max_length
        if len(ids) <= limit:
            return ids
        report.truncated += 1
        return ids[:limit]

    @property
    def _global_batch(self) -> int:
        return self.config.batch_size * self.accelerator.num_processes

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_examples) / self._global_batch)

    def total_steps(self) -> int:
        """Optimizer steps of the whole run: max_steps, else epochs x micro-batches / accumulation."""
        if self.config.max_steps > 0:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * self.micro_batches_per_epoch / self.config.grad_accum))

    def _epoch_order(self, epoch: int) -> list[int]:
        """A seeded permutation of the examples (grouped by length when asked), padded by wrapping so every rank
        gets full batches."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_examples), generator=generator).tolist()
        if self.config.group_by_length:
            order = self._length_grouped(order, generator)
        size = self.micro_batches_per_epoch * self._global_batch
        return [order[i % len(order)] for i in range(size)]

    def _length_grouped(self, order: list[int], generator: torch.Generator) -> list[int]:
        """``order`` cut into mega-batches of 50 global batches, each sorted by length and cut into batches, the full
        batches then shuffled (HF's ``group_by_length``): a batch pads to a length close to its own."""
        lengths = [self.count_tokens([example]) for example in self.train_examples]
        mega = 50 * self._global_batch
        ranked = [i for start in range(0, len(order), mega)
                  for i in sorted(order[start : start + mega], key=lambda i: -lengths[i])]
        full = len(ranked) // self._global_batch
        batches = [ranked[b * self._global_batch : (b + 1) * self._global_batch] for b in range(full)]
        shuffled = [i for b in torch.randperm(full, generator=generator).tolist() for i in batches[b]]
        return shuffled + ranked[full * self._global_batch :]  # a short last batch stays last

    def _micro_batches(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Endless ``(micro_step, this rank's examples)`` from data position ``start``, epoch after epoch."""
        rank, size = self.accelerator.process_index, self.config.batch_size
        micro_step, cached_epoch, order = start, -1, []
        while True:
            epoch, index = divmod(micro_step, self.micro_batches_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._epoch_order(epoch)
            chunk = order[index * self._global_batch : (index + 1) * self._global_batch]
            yield micro_step, [self.train_examples[i] for i in chunk[rank * size : (rank + 1) * size]]
            micro_step += 1

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = self.accelerator.device
        return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}

    @staticmethod
    def count_tokens(examples: list[dict[str, Any]]) -> int:
        """Tokens the model reads for these examples: the lengths of every ``*input_ids`` list."""
        return sum(len(value) for example in examples for key, value in example.items() if key.endswith("input_ids"))

    # ------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        """Run (or resume) training to the end; returns where the model and metrics are."""
        total = self.start_run()
        progress = tqdm(
            total=total, initial=self.state.step, desc=f"{self.kind} {Path(self.config.output_dir).name}",
            disable=not (self.config.progress and self.accelerator.is_main_process),
        )
        window = self.training_loop(total, progress)
        progress.close()
        return self._finish(window, total)

    def start_run(self) -> int:
        """Open the run directory, build and prepare optimizer and scheduler, restore a checkpoint when
        resuming, start trackers; returns the total number of steps."""
        config, accelerator = self.config, self.accelerator
        self.run = self._open_run_dir()
        total = self.total_steps()
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = get_scheduler(
            config.scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, optimizer, scheduler)
        accelerator.register_save_state_pre_hook(_keep_trainable_weights)
        self.before_training()
        if config.resume:
            self._resume()
        self._init_trackers()
        self.started = time.perf_counter() - self.state.elapsed_s
        return total

    def training_loop(self, total: int, progress: tqdm) -> "MetricWindow":
        """Supervised steps over micro-batches with gradient accumulation until ``total`` optimizer steps."""
        config, accelerator = self.config, self.accelerator
        window, tokens = MetricWindow(), 0
        self.model.train()
        for micro_step, examples in self._micro_batches(self.state.micro_step):
            if self.state.step >= total:
                break
            tokens += self.count_tokens(examples)
            batch = self._to_device(self.collate(examples))
            sync = (micro_step + 1) % config.grad_accum == 0
            with contextlib.nullcontext() if sync else accelerator.no_sync(self.model):
                loss, metrics = self.compute_loss(batch)
                self.check_finite(loss, "loss")
                accelerator.backward(loss / config.grad_accum)
            window.add(loss, metrics)
            self.state.micro_step = micro_step + 1
            if not sync:
                continue
            lr = self.scheduler.get_last_lr()[0]
            grad_norm = self.optimizer_step()
            step_info = {"lr": lr} if grad_norm is None else {"lr": lr, "grad_norm": grad_norm}
            self.complete_step(window, step_info, tokens, total, progress)
            tokens = 0
        return window

    def complete_step(
        self, window: "MetricWindow", step_info: dict[str, float], tokens: int, total: int, progress: tqdm
    ) -> None:
        """Count a finished optimizer step (``tokens`` trained on this rank), then log, evaluate and
        checkpoint as configured."""
        self.state.step += 1
        self.state.tokens += self._sum_over_ranks(tokens)
        self.state.elapsed_s = time.perf_counter() - self.started
        progress.update(1)
        self._after_step(window, step_info, total)

    def optimizer_step(self, step_scheduler: bool = True) -> float | None:
        """Clip gradients (NaN/inf stops the run), step the optimizer (and the LR schedule), zero the
        gradients; returns the gradient norm before clipping, if clipping is on."""
        grad_norm = None
        if self.config.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(trainable_parameters(self.model), self.config.max_grad_norm)
            self.check_finite(grad_norm, "gradient norm")
        self.optimizer.step()
        if step_scheduler:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.on_optimizer_step()
        return None if grad_norm is None else float(grad_norm)

    def _sum_over_ranks(self, count: int) -> int:
        if self.accelerator.num_processes == 1:
            return count
        return int(self.accelerator.reduce(torch.tensor([count], device=self.accelerator.device), "sum").item())

    def _after_step(self, window: "MetricWindow", step_info: dict[str, float], total: int) -> None:
        step, config = self.state.step, self.config
        if step % config.log_every == 0 or step == total:
            self._log({"step": step, **window.flush(self.accelerator), **step_info})
        if config.eval_every and step % config.eval_every == 0 and step != total and self.eval_examples:
            self._log({"step": step, **self.evaluate()})
        if config.save_every and step % config.save_every == 0:
            self.save_checkpoint()

    def check_finite(self, value: torch.Tensor, what: str) -> None:
        """Stop every rank with TrainingError when ``value`` is NaN/inf on any rank; checkpoints stay as they were."""
        finite = torch.isfinite(value.detach().float()).all().reshape(1).to(self.accelerator.device)
        if bool(self.accelerator.gather(finite).all()):
            return
        last = self.latest_checkpoint()
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingError(
            f"{what} became NaN/inf at step {self.state.step + 1} ({keep}); lower --lr, enable --max-grad-norm "
            "or check the data, then rerun with --resume"
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss and metrics on the evaluation data (this rank's share, averaged over ranks)."""
        self.model.eval()
        window = MetricWindow()
        rank, world, size = self.accelerator.process_index, self.accelerator.num_processes, self.config.batch_size
        share = self.eval_examples[rank::world] or self.eval_examples[:1]
        for start in range(0, len(share), size):
            batch = self._to_device(self.collate(share[start : start + size]))
            window.add(*self.compute_loss(batch))
        self.model.train()
        return {f"eval_{key}": value for key, value in window.flush(self.accelerator).items()}

    # ------------------------------------------------------------ run directory, logging

    def _open_run_dir(self) -> RunDirectory | None:
        if not self.accelerator.is_main_process:
            return None
        run = RunDirectory.create(
            self.config.output_dir,
            method=self.kind,
            overwrite=self.config.overwrite,
            resume=self.config.resume,
            base_model=self.config.model or "default",
            config=self.config.to_dict(),
            seed=self.config.seed,
        )
        return run

    def _init_trackers(self) -> None:
        if self.config.report_to == "none":
            return
        flat = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                for key, value in self.config.to_dict().items()}
        self.accelerator.init_trackers(self.kind, config=flat)

    def _log(self, record: dict[str, Any]) -> None:
        record = {**record, "tokens": self.state.tokens, "elapsed_s": round(self.state.elapsed_s, 3)}
        if self.accelerator.is_main_process:
            self.run.log_metrics(record)
        if self.config.report_to != "none":
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def _finish(self, window: "MetricWindow", total: int) -> TrainResult:
        final = self.evaluate() if self.eval_examples else {}
        if final:
            self._log({"step": self.state.step, **final})
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        run_dir, model_dir = Path(self.config.output_dir), Path(self.config.output_dir) / FINAL_MODEL
        if accelerator.is_main_process:
            self.save_model(model_dir)
            self.run.manifest.update({
                "steps": self.state.step,
                "trained_tokens": self.state.tokens,
                "wall_time_s": round(self.state.elapsed_s, 3),
                "num_processes": accelerator.num_processes,
                "data": {"examples": self.data_report.examples, "skipped": self.data_report.skipped,
                         "truncated": self.data_report.truncated},
                "final_metrics": final,
                **self.manifest_fields(),
            })
            self.run.add_artifact("model", FINAL_MODEL, kind=self.saved_model_kind())
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return TrainResult(run_dir, model_dir, self.state.step, self.state.tokens, final, self.data_report,
                           generated_tokens=int(self.generated_tokens),
                           wall_time_s=self.state.elapsed_s)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without DDP/FSDP wrappers; under mixed precision its forward keeps accelerate's autocast
        (a recipe serving the trained model in memory unwraps with ``keep_fp32_wrapper=False`` after training)."""
        return self.accelerator.unwrap_model(self.model)

    def saved_model_kind(self) -> str:
        """What ``save_model`` writes: ``"adapter"`` (a PEFT folder) or ``"full"`` (a complete model)."""
        return "adapter" if _is_peft(self.unwrapped_model) else "full"

    def save_model(self, directory: Path) -> None:
        """The trained weights in Hugging Face format (a PEFT adapter folder, or the full model) + tokenizer."""
        with atomic_path(directory) as staged:
            self.unwrapped_model.save_pretrained(staged, safe_serialization=True)
            self.tokenizer.save_pretrained(staged)

    # ------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return Path(self.config.output_dir) / CHECKPOINTS

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (staged ones are never named ``checkpoint-N``)."""
        if not self.checkpoint_root.is_dir():
            return None
        found = [(int(m.group(1)), p) for p in self.checkpoint_root.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
        return max(found)[1] if found else None

    def save_checkpoint(self) -> Path:
        """Trainable weights, optimizer, scheduler, RNG states and data position, staged then renamed."""
        accelerator = self.accelerator
        target = self.checkpoint_root / f"checkpoint-{self.state.step:08d}"
        staging = atomic_path(target) if accelerator.is_main_process else contextlib.nullcontext(None)
        with staging as staged:
            staged = Path(broadcast_object_list([str(staged)])[0])
            accelerator.save_state(str(staged), safe_serialization=True)
            if accelerator.is_main_process:
                torch.save(self.extra_state(), staged / "trainer_extra.pt")
                write_json_atomic(staged / TRAINER_STATE, {
                    "kind": self.kind, "config": self.config.to_dict(), **self.state.__dict__,
                })
            accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._prune_checkpoints()
        accelerator.wait_for_everyone()
        return target

    def _prune_checkpoints(self) -> None:
        found = sorted(p for p in self.checkpoint_root.iterdir() if _CHECKPOINT_NAME.match(p.name))
        for old in found[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> None:
        checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            return
        saved = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        if saved["kind"] != self.kind:
            raise ConfigError(f"cannot resume a {saved['kind']} run as {self.kind}; use another --output-dir")
        mismatch = resume_mismatch(saved["config"], self.config.to_dict())
        if mismatch:
            raise ConfigError(
                f"cannot resume from {checkpoint}: config field {mismatch!r} changed "
                f"({saved['config'].get(mismatch)!r} -> {getattr(self.config, mismatch, None)!r}); "
                "restore it or start a new --output-dir"
            )
        self.accelerator.load_state(str(checkpoint), strict=False)
        self.load_extra_state(torch.load(checkpoint / "trainer_extra.pt", weights_only=True))
        self.state = TrainState(**{key: saved[key] for key in TrainState.__dataclass_fields__})
        if self.accelerator.is_main_process:
            self._drop_metrics_after(self.state.step)

    def _drop_metrics_after(self, step: int) -> None:
        """Forget metrics.jsonl lines the resumed run will write again."""
        path = Path(self.config.output_dir) / METRICS
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _line_step(line) <= step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))


class MetricWindow:
    """Running sums of the loss and metrics since the last log line (kept on device, no per-step sync)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, loss: torch.Tensor, metrics: Mapping[str, Any]) -> None:
        for key, value in {"loss": loss, **metrics}.items():
            value = torch.as_tensor(value).detach().float().reshape(())
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def flush(self, accelerator: Accelerator) -> dict[str, float]:
        if not self.count:
            return {}
        keys = sorted(self.sums)
        means = torch.stack([self.sums[key] for key in keys]).to(accelerator.device) / self.count
        means = accelerator.reduce(means, reduction="mean")
        self.sums, self.count = {}, 0
        return {key: float(value) for key, value in zip(keys, means.tolist())}


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a killed run: drop it


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _keep_trainable_weights(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
    """Accelerate save hook: checkpoint only the trainable weights (frozen base weights never change)."""
    for model, state in zip(models, weights):
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        for name in [name for name in state if name not in trainable]:
            del state[name]


def _make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator for this run; the scheduler steps once per optimizer step whatever the world size."""
    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    AcceleratorState._reset_state(reset_partial_state=False)  # a previous run's precision must not stick
    return Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_dir=config.output_dir,
        step_scheduler_with_optimizer=False,
    )


def make_trainable(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """``model`` with a fresh LoRA adapter (a PeftModel), or fully trainable when ``config.full_finetune``."""
    from ..models.lora import attach_lora

    if config.full_finetune:
        return model.requires_grad_(True)
    targets = config.lora_targets
    try:
        return attach_lora(
            model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,
        )
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"cannot attach LoRA to {config.model or 'the default model'}: {str(exc).splitlines()[0]}; "
                          "check --lora-targets") from None


def load_causal_lm(config: TrainConfig) -> tuple[torch.nn.Module, Any]:
    """The policy to train: ``config.model`` (default: the embedded model) on CPU, made trainable."""
    from ..models.loading import load_model

    model, tokenizer = load_model(config.model, dtype=config.dtype, device="cpu")
    return make_trainable(model, config), tokenizer
