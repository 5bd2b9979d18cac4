"""Learned objectives: our own score models and public reward models, through the Objective interface.

Public reward models each expect their own input text, logit index and sign. ``PRESETS`` records
them for the models the original systems use; the facts come from the code that used them:
RiC (YangRui2015/RiC, ``ppo/multi_reward_models.py``, ``ppo/utils.py``), the model cards, and
safe-rlhf (PKU-Alignment/safe-rlhf, ``safe_rlhf/models/score_model``, ``configs/constants.py``).
Weights load from safetensors only unless ``allow_pickle=True``; remote code is never run.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, ModelLoadError
from ..core.runtime import choose_device, choose_dtype
from ..models.score_model import sequence_scores
from .base import Objective
from .builtin import extract_source

DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 1024

# (tokenizer, prompt, response) -> (text, text_pair or None): what the model reads.
InputBuilder = Callable[[Any, str, str], "tuple[str, str | None]"]


def render_for_scoring(tokenizer: Any, prompt: str, response: str) -> str:
    """The text a score model reads for (prompt, response): the chat template's user + assistant turns
    when the tokenizer has one, else ``prompt + "\\n" + response``. Train score models on the same text."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{prompt}\n{response}"


def hh_query(prompt: str) -> str:
    """A prompt in Anthropic HH form, ``"\\n\\nHuman: {prompt} \\n\\nAssistant:"``, as RiC's
    ``Instructions.get_input`` builds it; prompts already in HH form keep their turns."""
    text = prompt.rstrip()
    if text.endswith("Assistant:"):
        text = text[: -len("Assistant:")].rstrip()
    if "Human:" not in text:
        text = f"\n\nHuman: {text.strip()}"
    return f"{text} \n\nAssistant:"


def _hh_pair(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return hh_query(prompt), response.strip()


def _question_answer(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return prompt, response


def _response_only(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return response, None


def _summary_bos_post(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return f"{response} {tokenizer.bos_token} {extract_source(prompt)}", None


def _summary_article_pair(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return response, extract_source(prompt)


def _safe_rlhf_conversation(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    # safe-rlhf: PROMPT_BEGIN + PROMPT_USER + PROMPT_ASSISTANT, then the answer and EOS, as in its
    # preference dataset (prompt + answer + eos_token); the tokenizer adds BOS.
    eos = tokenizer.eos_token or ""
    return f"BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}{eos}", None


def _chat_rendered(tokenizer: Any, prompt: str, response: str) -> tuple[str, str | None]:
    return render_for_scoring(tokenizer, prompt, response), None


@dataclass(frozen=True)
class RewardModelPreset:
    """How to use one public reward model: objective name, input text, logit index, sign."""

    name: str
    description: str
    build_inputs: InputBuilder
    logit_index: int = 0
    direction: int = 1
    safe_rlhf_score: bool = False  # a safe-rlhf LlamaForScore checkpoint, not a transformers class


PRESETS: dict[str, RewardModelPreset] = {
    # GPT2ForSequenceClassification; card and RiC: rm_tokenizer(q, a) with q in HH form, logits[0].
    "Ray2333/gpt2-large-harmless-reward_model": RewardModelPreset(
        "harmless", "harmlessness reward (GPT-2 large trained on Anthropic HH harmless)", _hh_pair
    ),
    "Ray2333/gpt2-large-helpful-reward_model": RewardModelPreset(
        "helpful", "helpfulness reward (GPT-2 large trained on Anthropic HH helpful)", _hh_pair
    ),
    # DebertaV2ForSequenceClassification; card: tokenizer(question, answer), logits[0].
    "OpenAssistant/reward-model-deberta-v3-large-v2": RewardModelPreset(
        "deberta", "overall answer quality (OpenAssistant DeBERTa-v3 reward model)", _question_answer
    ),
    # DistilBertForSequenceClassification, id2label {0: NO_HUMOR, 1: HUMOR}; RiC scores the response
    # alone and reads logits[0][1].
    "mohameddhiab/humor-no-humor": RewardModelPreset(
        "humor", "humor: HUMOR logit of a DistilBERT humor classifier on the response", _response_only, 1
    ),
    # GPT2ForSequenceClassification; RiC: summary + " " + bos_token + " " + post, logits[0].
    "Tristan/gpt2_reward_summarization": RewardModelPreset(
        "summary", "summary quality (GPT-2 reward on OpenAI summarize-from-feedback)", _summary_bos_post
    ),
    # BartForSequenceClassification, 2 labels; card: summary first, then the article; RiC:
    # tokenizer(text=summary, text_pair=post) and logits[0][1] (faithful).
    "CogComp/bart-faithful-summary-detector": RewardModelPreset(
        "faithful", "faithfulness of a summary to its source (BART faithful-summary logit)",
        _summary_article_pair, 1,
    ),
    # safe-rlhf LlamaForScore: LlamaModel + score_head, end score at the last token.
    "PKU-Alignment/beaver-7b-v1.0-reward": RewardModelPreset(
        "beaver_reward", "helpfulness reward (safe-rlhf Beaver-7B reward model)",
        _safe_rlhf_conversation, safe_rlhf_score=True,
    ),
    # Cost: > 0 unsafe, <= 0 safe; lower is better.
    "PKU-Alignment/beaver-7b-v1.0-cost": RewardModelPreset(
        "beaver_cost", "harm cost, > 0 means unsafe (safe-rlhf Beaver-7B cost model), lower is better",
        _safe_rlhf_conversation, direction=-1, safe_rlhf_score=True,
    ),
}


def _forward_inputs(model: nn.Module, encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tokenizer outputs the model's forward accepts (DistilBERT takes no token_type_ids)."""
    accepted = inspect.signature(model.forward).parameters
    return {key: value for key, value in encoded.items() if key in accepted}


class ClassifierObjective(Objective):
    """An objective read from one logit of a classifier-style model on a built input text (pair)."""

    unit = "logit"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        description: str,
        build_inputs: InputBuilder,
        logit_index: int = 0,
        direction: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int = DEFAULT_MAX_LENGTH,
        add_special_tokens: bool = True,
    ) -> None:
        super().__init__()
        labels = getattr(getattr(model, "config", None), "num_labels", None)
        if labels is not None and not 0 <= logit_index < labels:
            raise ConfigError(f"objective {name!r} reads logit {logit_index} but the model has {labels} labels")
        if direction not in (1, -1):
            raise ConfigError(f"direction of objective {name!r} must be 1 or -1, got {direction!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        self.name, self.description, self.direction = name, description, direction
        tokenizer = copy.deepcopy(tokenizer)  # padding settings below must not leak to the caller's copy
        if tokenizer.pad_token is None:  # GPT-2 has none; padding is masked, any token will do
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        config = getattr(model, "config", None)
        if config is not None and config.pad_token_id is None:  # GPT-2 finds the last token by it
            config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.build_inputs, self.logit_index, self.batch_size = build_inputs, logit_index, batch_size
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
        self.add_special_tokens = add_special_tokens

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The chosen logit for each (prompt, response), computed in batches of similar length."""
        if len(prompts) != len(responses):
            raise ConfigError(
                f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response"
            )
        inputs = [self.build_inputs(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]) + len(inputs[i][1] or ""))
        scores = np.zeros(len(inputs), dtype=np.float64)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            scores[chunk] = self._score_batch([inputs[i] for i in chunk])
        return scores

    def _encode(self, batch: list[tuple[str, str | None]]) -> dict[str, torch.Tensor]:
        """Tokenize (text, optional pair) inputs into one padded batch on the model's device."""
        pairs = [pair for _, pair in batch]
        return self.tokenizer(
            [text for text, _ in batch],
            pairs if pairs[0] is not None else None,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=self.add_special_tokens,
            return_tensors="pt",
        ).to(self.device)

    @torch.inference_mode()
    def _score_batch(self, batch: list[tuple[str, str | None]]) -> np.ndarray:
        encoded = self._encode(batch)
        logits = self.model(**_forward_inputs(self.model, encoded)).logits
        return logits[:, self.logit_index].float().cpu().numpy()


class SafeRLHFScoreModel(nn.Module):
    """safe-rlhf's ``LlamaForScore`` (any ``<Arch>ForScore``): a transformers backbone plus a linear
    ``score_head``; the score is the head's output at the last attended token (its ``end_scores``)."""

    def __init__(self, backbone: nn.Module, score_head: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.score_head = backbone, score_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        end_index = (attention_mask.bool() * positions).argmax(dim=-1)
        end_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), end_index]
        return SequenceClassifierOutput(logits=self.score_head(end_hidden).float())

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype) -> "SafeRLHFScoreModel":
        """Build the backbone with transformers and the head from the checkpoint's safetensors files."""
        from safetensors import safe_open
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        config = AutoConfig.from_pretrained(folder)
        base = AutoModel._model_mapping[type(config)]
        backbone_class = type(base.__name__, (base,), {"_keys_to_ignore_on_load_unexpected": [r"^score_head\."]})
        backbone = backbone_class.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        head_tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(folder.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():
                    if key.startswith("score_head."):
                        head_tensors[key.removeprefix("score_head.")] = handle.get_tensor(key)
        if "weight" not in head_tensors:
            raise ModelLoadError(f"{folder} has no score_head weights; it is not a safe-rlhf score model")
        out_dim, in_dim = head_tensors["weight"].shape
        head = nn.Linear(in_dim, out_dim, bias="bias" in head_tensors, dtype=dtype)
        head.load_state_dict(head_tensors)
        return cls(backbone, head)


def _is_safe_rlhf_checkpoint(source: str | Path) -> bool:
    """True when the checkpoint's config names a safe-rlhf ``<Arch>ForScore`` architecture."""
    from transformers import AutoConfig

    try:
        architectures = AutoConfig.from_pretrained(str(source)).architectures or []
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read the config of reward model {str(source)!r} ({type(exc).__name__}); download "
            f"it first (`hf download {source}`) or give a local folder"
        ) from None
    return any(arch.endswith("ForScore") for arch in architectures)


def _local_folder(hub_id_or_path: str) -> Path:
    """A local folder for a path or a hub id (from the Hugging Face cache, or downloaded when online)."""
    path = Path(hub_id_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(hub_id_or_path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        )
    except Exception as exc:  # offline cache miss, unknown repo, network error
        raise ModelLoadError(
            f"cannot get reward model {hub_id_or_path!r} ({type(exc).__name__}); download it first "
            f"(`hf download {hub_id_or_path}`) or give a local folder"
        ) from None


def _load_tokenizer(source: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of {str(source)!r} ({type(exc).__name__}: {exc}); "
            "check the folder or hub id"
        ) from None


def _load_classifier(source: str | Path, dtype: torch.dtype, allow_pickle: bool) -> nn.Module:
    """A trained ``AutoModelForSequenceClassification``; a checkpoint without a trained head is refused
    (transformers would silently give it a random one)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(source), dtype=dtype, use_safetensors=None if allow_pickle else True, output_loading_info=True
        )
    except Exception as exc:
        hint = "" if allow_pickle else "; if it only has pickled weights and you trust it, pass allow_pickle=true"
        raise ModelLoadError(
            f"cannot load {str(source)!r} as a sequence classifier ({type(exc).__name__}){hint}"
        ) from None
    if info["missing_keys"]:
        missing = ", ".join(sorted(info["missing_keys"])[:3])
        raise ModelLoadError(
            f"{str(source)!r} has no trained scoring head (missing {missing}); give a reward or score model"
        )
    return model


def _default_name(hub_id_or_path: str) -> str:
    return re.sub(r"\W+", "_", Path(hub_id_or_path.rstrip("/")).name).strip("_").lower() or "reward_model"


class ScoreModelObjective(ClassifierObjective):
    """Our own score model: a folder saved by ``AutoModelForSequenceClassification`` with one label
    (e.g. a LlamaForSequenceClassification), reading (prompt, response) through the chat template."""

    def __init__(
        self,
        path_or_model: str | Path | nn.Module,
        name: str,
        description: str,
        direction: int = 1,
        *,
        tokenizer: Any = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int = DEFAULT_MAX_LENGTH,
        allow_pickle: bool = False,
    ) -> None:
        target = choose_device(device)
        if isinstance(path_or_model, nn.Module):
            if tokenizer is None:
                raise ConfigError(f"score model objective {name!r} got a model but no tokenizer; pass tokenizer=")
            model = path_or_model
        else:
            model = _load_classifier(path_or_model, choose_dtype(target, dtype), allow_pickle)
            tokenizer = tokenizer or _load_tokenizer(path_or_model)
        labels = getattr(model.config, "num_labels", 1)
        if labels != 1:
            raise ModelLoadError(
                f"score model {name!r} has {labels} labels, a score model has 1; "
                "for a public classifier use load_reward_model_objective with a preset"
            )
        super().__init__(
            model.to(target),
            tokenizer,
            name=name,
            description=description,
            build_inputs=_chat_rendered,
            direction=direction,
            batch_size=batch_size,
            max_length=max_length,
            add_special_tokens=not getattr(tokenizer, "chat_template", None),  # the template has them
        )

    @torch.inference_mode()
    def _score_batch(self, batch: list[tuple[str, str | None]]) -> np.ndarray:
        """Read the score at the last real token, as training does (``models.sequence_scores``).

        HF's own pooling skips trailing tokens equal to the pad token; ours share pad and EOS, so it
        would read a different position than the one the score model was trained on.
        """
        encoded = self._encode(batch)
        return sequence_scores(self.model, encoded["input_ids"], encoded["attention_mask"]).float().cpu().numpy()


def load_reward_model_objective(
    hub_id_or_path: str,
    preset: str | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    direction: int | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    allow_pickle: bool = False,
) -> Objective:
    """A reward model as an objective, by hub id, preset name (``harmless``, ``beaver_cost``, ...) or folder.

    ``preset`` (a preset name or hub id from ``PRESETS``) fixes input format, logit and sign; by
    default a known hub id uses its preset, a safe-rlhf ``*ForScore`` checkpoint its conversation
    format, and anything else is read as our own score model (chat template, logit 0, sign +1).
    """
    source, chosen = _find_preset(hub_id_or_path, preset)
    target = choose_device(device)
    torch_dtype = choose_dtype(target, dtype)
    if chosen is None and not _is_safe_rlhf_checkpoint(source):
        return ScoreModelObjective(
            source,
            name or _default_name(source),
            description or f"score of the model {source}",
            1 if direction is None else direction,
            device=device,
            dtype=torch_dtype,
            batch_size=batch_size,
            max_length=max_length,
            allow_pickle=allow_pickle,
        )
    if chosen is None:
        chosen = RewardModelPreset(
            _default_name(source), f"score of the safe-rlhf model {source}",
            _safe_rlhf_conversation, safe_rlhf_score=True,
        )
    if chosen.safe_rlhf_score:
        folder = _local_folder(source)
        model: nn.Module = SafeRLHFScoreModel.from_pretrained(folder, torch_dtype)
        tokenizer = _load_tokenizer(folder)
    else:
        model = _load_classifier(source, torch_dtype, allow_pickle)
        tokenizer = _load_tokenizer(source)
    return ClassifierObjective(
        model.to(target),
        tokenizer,
        name=name or chosen.name,
        description=description or chosen.description,
        build_inputs=chosen.build_inputs,
        logit_index=chosen.logit_index,
        direction=chosen.direction if direction is None else direction,
        batch_size=batch_size,
        max_length=max_length,
    )


def _find_preset(hub_id_or_path: str, preset: str | None) -> tuple[str, RewardModelPreset | None]:
    """(where to load from, preset): a preset name as the model stands for its hub id; an explicit
    ``preset`` that is unknown is an error."""
    by_name = {entry.name: hub_id for hub_id, entry in PRESETS.items()}
    source = by_name.get(hub_id_or_path, hub_id_or_path)
    key = preset or source
    chosen = PRESETS.get(by_name.get(key, key))
    if preset is not None and chosen is None:
        raise ConfigError(
            f"unknown reward model preset {preset!r}; known presets: {', '.join(sorted(by_name))} "
            "(or their hub ids)"
        )
    return source, chosen
