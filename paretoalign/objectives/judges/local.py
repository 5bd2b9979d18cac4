"""A local causal LM as judge: the probability of answer token "A" against "B" after the judge prompt."""

from __future__ import annotations

import inspect
import math
from typing import Any

from ...core.errors import ConfigError
from .base import Judge, Reading, choice_from_probability
from .criteria import Criterion, judge_messages

LETTERS = ("A", "B")
LABELS = ("Response A", "Response B")
OPTIONS = "one letter, A or B"
REVERSED = "\n<<< the same pair in reversed order >>>\n"


class LocalJudge(Judge):
    """Compares log π(A) and log π(B) at the start of the judge model's answer, in batches.

    ``model``: anything :func:`paretoalign.models.load_model` loads (None: the embedded default), or a
    loaded ``(model, tokenizer)`` pair. ``probability`` is the softmax over the two tokens; a pair is a
    tie when it is within ``margin`` of 0.5. With ``both_orders`` each pair is also read with the
    responses swapped and the two probabilities averaged, which cancels position bias: the embedded
    SmolLM2-135M gives the first-shown response 0.66-0.69 on average whatever it says.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        batch_size: int = 8,
        margin: float = 0.0,
        seed: int = 0,
        device: str | None = None,
        both_orders: bool = True,
    ) -> None:
        super().__init__(seed)
        if batch_size < 1:
            raise ConfigError(f"judge batch_size {batch_size} must be at least 1")
        if not 0 <= margin < 0.5:
            raise ConfigError(f"judge margin {margin} must be in [0, 0.5): the tie band around probability 0.5")
        self.batch_size = batch_size
        self.margin = margin
        self.device = device
        self.both_orders = both_orders
        if isinstance(model, tuple):
            self._loaded: tuple[Any, Any] | None = model
            self.name = f"local:{getattr(model[0], 'name_or_path', '') or type(model[0]).__name__}"
        else:
            self._loaded = None
            self._spec = model
            self.name = f"local:{model or 'default'}"

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from ...models import load_model

            self._loaded = load_model(self._spec, device=self.device)
        return self._loaded

    def read(self, prompts: list[str], firsts: list[str], seconds: list[str], criterion: Criterion) -> list[Reading]:
        model, tokenizer = self._model()
        texts = self._render(tokenizer, prompts, firsts, seconds, criterion)
        if self.both_orders:
            texts += self._render(tokenizer, prompts, seconds, firsts, criterion)
        logps = answer_logprobs(model, tokenizer, texts, answer_token_ids(tokenizer), self.batch_size)
        raws = [f"logp(A)={logp_a:.4f} logp(B)={logp_b:.4f}" for logp_a, logp_b in logps]
        p_firsts = [0.5 * (1.0 + math.tanh((logp_a - logp_b) / 2)) for logp_a, logp_b in logps]
        n = len(prompts)
        readings = []
        for i in range(n):
            p_first, prompt, raw = p_firsts[i], texts[i], raws[i]
            if self.both_orders:
                p_first = (p_first + 1.0 - p_firsts[n + i]) / 2
                prompt = f"{prompt}{REVERSED}{texts[n + i]}"
                raw = f"{raw}; reversed: {raws[n + i]}"
            readings.append(Reading(choice_from_probability(p_first, self.margin), p_first, prompt, raw))
        return readings

    @staticmethod
    def _render(
        tokenizer: Any, prompts: list[str], firsts: list[str], seconds: list[str], criterion: Criterion
    ) -> list[str]:
        from ...generation.chat import render_prompts

        texts = []
        for prompt, first, second in zip(prompts, firsts, seconds):
            system, user = judge_messages(prompt, first, second, criterion, LABELS, OPTIONS)
            texts.extend(render_prompts(tokenizer, [user["content"]], system["content"]))
        return texts


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The single token ids of "A" and "B" as an answer's first token."""
    ids = [tokenizer.encode(letter, add_special_tokens=False) for letter in LETTERS]
    if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
        raise ConfigError(
            f"the judge model's tokenizer encodes 'A' and 'B' as {ids}, not as two single tokens; "
            "use another judge model"
        )
    return ids[0][0], ids[1][0]


def answer_logprobs(
    model: Any, tokenizer: Any, texts: list[str], token_ids: tuple[int, int], batch_size: int
) -> list[tuple[float, float]]:
    """log π(token | text) of both tokens for each rendered text, batched by similar lengths."""
    import torch

    from ...generation.chat import pad_id, pad_left, prompt_token_ids

    ids = prompt_token_ids(tokenizer, texts, rendered=True)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    device = next(model.parameters()).device
    result: list[tuple[float, float]] = [(0.0, 0.0)] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, attention_mask = pad_left([ids[i] for i in rows], pad_id(tokenizer))
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                **extra,
            ).logits[:, -1, :]
        logps = torch.log_softmax(logits.float(), dim=-1)[:, list(token_ids)].cpu().tolist()
        for row, pair in zip(rows, logps):
            result[row] = (pair[0], pair[1])
    return result
