"""PTX: the language-modelling loss on (prompt, response) records that RL trainers may add to their own
(InstructGPT's PPO-ptx; Safe-RLHF's and HC-RLHF's optional PTX term), as batches cycling through the records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from ...core.errors import ConfigError
from ...generation.chat import pad_id, render_prompts
from ..base import as_record_dict
from ..logprobs import IGNORE_INDEX
from ..sft import render_conversation, response_text, tokenize_completion


class PTXBatches:
    """Padded language-modelling batches of ``batch_size`` (prompt, response) records, cycling in order; the
    loss is on response tokens only, rendered with the policy's chat template and system prompt."""

    def __init__(self, records: Sequence[Any], tokenizer: Any, batch_size: int, max_length: int,
                 system_prompt: str | None = None) -> None:
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.max_length, self.system_prompt = max_length, system_prompt
        rows = [as_record_dict(record) for record in records]
        self.examples = [example for row in rows if (example := self._encode(row)) is not None]
        if not self.examples:
            raise ConfigError("no PTX record has response tokens within max_length; check --ptx-dataset")
        self.position = 0

    def _encode(self, record: dict[str, Any]) -> dict[str, list[int]] | None:
        prompt_text = render_prompts(self.tokenizer, [record["prompt"]], self.system_prompt)[0]
        full = render_conversation(self.tokenizer, prompt_text, record["prompt"], response_text(record),
                                   self.system_prompt)
        ids, labels = tokenize_completion(self.tokenizer, prompt_text, full)
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        return {"input_ids": ids, "labels": labels} if any(x != IGNORE_INDEX for x in labels[1:]) else None

    def next_batch(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The next ``batch_size`` records as ``input_ids`` / ``labels`` / ``attention_mask`` on ``device``."""
        rows = [self.examples[(self.position + i) % len(self.examples)] for i in range(self.batch_size)]
        self.position = (self.position + self.batch_size) % len(self.examples)
        tensors = {key: [torch.tensor(row[key]) for row in rows] for key in ("input_ids", "labels")}
        return {
            "input_ids": pad_sequence(tensors["input_ids"], batch_first=True,
                                      padding_value=pad_id(self.tokenizer)).to(device),
            "labels": pad_sequence(tensors["labels"], batch_first=True, padding_value=IGNORE_INDEX).to(device),
            "attention_mask": pad_sequence([torch.ones(len(ids), dtype=torch.long) for ids in tensors["input_ids"]],
                                           batch_first=True).to(device),
        }
