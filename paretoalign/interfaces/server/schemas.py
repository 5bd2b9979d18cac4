"""Request bodies of the OpenAI-compatible routes (pydantic: a wrong type or range is a 422) and the
OpenAI error JSON every failure is answered with."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UNSUPPORTED = {
    "tools": "tool calls", "functions": "function calls", "tool_choice": "tool calls", "function_call": "function calls",
    "logit_bias": "logit_bias", "logprobs": "logprobs", "top_logprobs": "logprobs", "echo": "echo", "suffix": "suffix",
    "response_format": "response_format", "audio": "audio output", "modalities": "other modalities",
}
"""Body fields whose OpenAI meaning this server cannot honour (a 400 names them rather than ignoring them)."""
NEUTRAL_VALUES = (None, False, 0, "text", "auto", "none", [], {}, {"type": "text"})
"""Values of the fields above that ask for nothing beyond plain text (``best_of: 1``, ``logprobs: false``...)."""


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions, plus the steering extras (``preference``, ``constraints``,
    ``return_scores``); other OpenAI fields are accepted and ignored unless they are in ``UNSUPPORTED``."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    best_of: int | None = None
    preference: dict[str, Any] | str | None = None
    constraints: str | list[str] | None = None
    return_scores: bool = False

    def unsupported(self) -> str | None:
        """The first field set to something this server does not do, as an error message (None: all fine)."""
        extra = self.model_extra or {}
        for name, what in UNSUPPORTED.items():
            value = extra.get(name)
            if not any(value is neutral or value == neutral for neutral in NEUTRAL_VALUES):
                return f"{what} ({name!r}) are not supported by this server; remove {name!r} from the request"
        if self.presence_penalty or self.frequency_penalty:
            return "presence_penalty and frequency_penalty are not supported by this server; leave them at 0"
        if self.best_of not in (None, 1):
            return "best_of is not supported by this server; use n for several answers"
        return None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The OpenAI error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_id(prefix: str) -> tuple[str, int]:
    """A fresh response id (``chatcmpl-…`` / ``cmpl-…``) and the Unix time it was created."""
    return f"{prefix}-{uuid.uuid4().hex}", int(time.time())
