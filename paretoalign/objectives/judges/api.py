"""An LLM behind an OpenAI-compatible chat API as judge, with bounded concurrency and a verdict cache.

The official ``openai`` client does the HTTP: timeouts, and retries with exponential backoff (and the
server's Retry-After) on connection errors, 408/409/429 and 5xx. The API key is read from an environment
variable at call time and never stored. Answers are cached on disk under a hash of everything the
server was sent, so a rerun asks only for what it lacks; a failed request caches nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, JudgeError, require
from ...core.files import write_json_atomic
from .base import Judge, Position, Reading
from .criteria import Criterion, judge_messages

log = logging.getLogger(__name__)

LABELS = ("Output (a)", "Output (b)")
OPTIONS = '"Output (a)" or "Output (b)"'
_OUTPUT = re.compile(r"output\s*\(\s*([ab])\s*\)", re.I)
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def parse_answer(text: str) -> Position:
    """The position an answer names: the first "Output (a)"/"Output (b)" in it, or a bare "a"/"b";
    anything else is a tie."""
    match = _OUTPUT.search(text)
    letter = match.group(1).lower() if match else text.strip().strip(".\"'()").lower()
    return {"a": "first", "b": "second"}.get(letter, "tie")


class VerdictCache:
    """Judge answers in ``folder``, one JSON file per request hash, written atomically."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["answer"])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring corrupt judge cache entry %s", path)
            return None

    def put(self, key: str, request: dict[str, Any], answer: str) -> None:
        write_json_atomic(self._path(key), {"request": request, "answer": answer})


class ApiJudge(Judge):
    """Asks ``model`` at ``base_url`` which output fits the criterion; the answer names "Output (a)"/"(b)".

    ``api_key_env`` names the environment variable holding the key (None: a server without keys).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 3,
        timeout: float = 60.0,
        cache_dir: str | os.PathLike | None = None,
        temperature: float = 0.0,
        max_tokens: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not model:
            raise ConfigError("the API judge needs a model name, e.g. api:gpt-4o")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError(
                f"API judge concurrency {concurrency}, max_retries {max_retries} and timeout {timeout} must be "
                "at least 1, at least 0 and positive"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.cache = VerdictCache(cache_dir) if cache_dir is not None else None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"api:{model}@{self.base_url}"

    def _client(self) -> Any:
        openai = require("openai", "the API judge", "openai")
        key = "none"
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ConfigError(
                    f"environment variable {self.api_key_env} holds no API key; export it, or set api_key_env "
                    "to the variable that does (None for a server without keys)"
                )
        return openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=self.max_retries)

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def read(self, prompts: list[str], firsts: list[str], seconds: list[str], criterion: Criterion) -> list[Reading]:
        conversations = [
            judge_messages(prompt, first, second, criterion, LABELS, OPTIONS)
            for prompt, first, second in zip(prompts, firsts, seconds)
        ]
        requests = [self._request(messages) for messages in conversations]
        answers = self._answers(requests)
        unparsed = sum(parse_answer(answer) == "tie" for answer in answers)
        if unparsed:
            log.warning("%d of %d judge answers named neither output; counted as ties", unparsed, len(answers))
        return [
            Reading(parse_answer(answer), None, json.dumps(messages, ensure_ascii=False), answer)
            for messages, answer in zip(conversations, answers)
        ]

    def _answers(self, requests: list[dict[str, Any]]) -> list[str]:
        keys = [VerdictCache.key(request) for request in requests]
        answers = [self.cache.get(key) if self.cache is not None else None for key in keys]
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if not missing:
            return [str(answer) for answer in answers]
        client = self._client()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing)))
        try:
            futures = {i: pool.submit(self._ask, client, requests[i]) for i in missing}
            for i, future in futures.items():
                answers[i] = future.result()
                if self.cache is not None:
                    self.cache.put(keys[i], requests[i], answers[i])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [str(answer) for answer in answers]

    def _ask(self, client: Any, request: dict[str, Any]) -> str:
        import openai

        try:
            completion = client.chat.completions.create(
                model=self.model,
                messages=request["messages"],
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.APIError as exc:
            reason = " ".join(str(exc).split())
            raise JudgeError(
                f"judge API {self.base_url} failed ({type(exc).__name__}: {reason}) with up to {self.max_retries} "
                "retries; check the URL, that the server is up, and the model name"
            ) from None
        try:
            return str(completion.choices[0].message.content or "")
        except (AttributeError, IndexError, TypeError):
            shown = " ".join(str(completion).split())[:200]
            raise JudgeError(
                f"judge API {self.base_url} answered something that is not a chat completion ({shown!r}); "
                "check that base_url is the OpenAI-compatible /v1 root"
            ) from None
