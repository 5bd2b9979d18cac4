"""Supervised fine-tuning with the loss on response tokens only, chat-template aware, optional packing.

The prompt is rendered by the tokenizer's chat template exactly as at generation time
(``generation.chat``), the full conversation is rendered with the assistant's answer, and every token
that starts inside the rendered prompt's characters is masked: the mask follows the template's text, not
a guess about how it tokenizes. Callers condition training through ``prompt_transform(record) -> str``
(RiC writes reward targets into the prompt this way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..core.errors import DataError
from ..generation.chat import has_chat_template, pad_id, render_prompts
from .base import DataReport, Trainer, load_causal_lm
from .config import SFTConfig
from .logprobs import IGNORE_INDEX, response_logits

PromptTransform = Callable[[dict[str, Any]], str]


def response_text(record: dict[str, Any]) -> str:
    """The answer of a (prompt, response) record; TRL's ``completion`` column is accepted too."""
    text = record.get("response", record.get("completion"))
    if not isinstance(text, str):
        raise DataError("an SFT record needs a 'response' (or 'completion') string")
    return text


def render_conversation(tokenizer, prompt_text: str, prompt: str, response: str, system_prompt: str | None) -> str:
    """The prompt + answer as the template writes a finished assistant turn (ending with its stop token).

    Templates that do not extend the generation prompt (some rewrite earlier turns) fall back to the
    rendered prompt + answer + EOS, so the prompt part is always the exact generation-time prompt.
    """
    eos = tokenizer.eos_token or ""
    if not has_chat_template(tokenizer):
        return prompt_text + response + eos
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    return full if full.startswith(prompt_text) and len(full) > len(prompt_text) else prompt_text + response + eos


def tokenize_completion(tokenizer, prompt_text: str, full_text: str) -> tuple[list[int], list[int]]:
    """Token ids of ``full_text`` and labels with every token starting inside ``prompt_text`` set to -100."""
    encoded = tokenizer(
        full_text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True
    )
    ids = list(encoded["input_ids"])
    labels = [
        IGNORE_INDEX if start < len(prompt_text) else token
        for token, (start, _) in zip(ids, encoded["offset_mapping"])
    ]
    return ids, labels


def pack_examples(examples: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Best-fit-decreasing packing into rows of <= max_length tokens; positions restart per example.

    Restarting ``position_ids`` makes transformers build a block-diagonal causal mask (no attention
    across packed examples) when no attention mask is given.
    """
    rows: list[dict[str, list[int]]] = []
    for example in sorted(examples, key=lambda e: len(e["input_ids"]), reverse=True):
        size = len(example["input_ids"])
        fits = [row for row in rows if len(row["input_ids"]) + size <= max_length]
        row = min(fits, key=lambda r: max_length - len(r["input_ids"])) if fits else None
        if row is None:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += example["input_ids"]
        row["labels"] += example["labels"]
        row["position_ids"] += list(range(size))
    return rows


class SFTTrainer(Trainer):
    """Next-token loss on response tokens of (prompt, response) records; LoRA or full fine-tuning."""

    kind = "sft"
    required_columns = ("prompt",)

    def __init__(
        self,
        config: SFTConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        prompt_transform: PromptTransform | None = None,
    ) -> None:
        self.prompt_transform = prompt_transform
        super().__init__(config, train_data, eval_data, model=model, tokenizer=tokenizer)

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        return load_causal_lm(self.config)

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        prompt = self.prompt_transform(record) if self.prompt_transform else record["prompt"]
        response = response_text(record)
        system = self.config.system_prompt
        prompt_text = render_prompts(self.tokenizer, [prompt], system)[0]
        full_text = render_conversation(self.tokenizer, prompt_text, prompt, response, system)
        ids, labels = tokenize_completion(self.tokenizer, prompt_text, full_text)
        if not self.config.completion_only:
            labels = list(ids)
        if all(label == IGNORE_INDEX for label in labels[1 : self.config.max_length]):
            report.skip("no response tokens within max_length")
            return None
        return {"input_ids": self.truncate(ids, report), "labels": labels[: self.config.max_length]}

    def finalize_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return pack_examples(examples, self.config.max_length) if self.config.packing else examples

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        def padded(key: str, value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(e[key]) for e in examples], batch_first=True, padding_value=value)

        batch = {"input_ids": padded("input_ids", pad_id(self.tokenizer)), "labels": padded("labels", IGNORE_INDEX)}
        if self.config.packing:
            # padding continues as its own "sequence" (positions restart at 0); its labels are ignored
            batch["position_ids"] = pad_sequence(
                [torch.tensor(e["position_ids"]) for e in examples], batch_first=True, padding_value=0
            )
        else:
            lengths = [len(e["input_ids"]) for e in examples]
            batch["attention_mask"] = pad_sequence([torch.ones(n, dtype=torch.long) for n in lengths], batch_first=True)
        return batch

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Mean next-token cross-entropy over the response tokens (the LM head runs from the last prompt position)."""
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        logits, labels = response_logits(self.model, batch["labels"], **inputs)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        return loss, {}
