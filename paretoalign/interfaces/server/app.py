"""The OpenAI-compatible routes over the engines (one per served model), and the playground page.

Thin on purpose: a route checks the request, turns it into a :class:`~.scheduler.Job`, and formats what the
engine answers. ``/v1/chat/completions`` answers the last user message (after optional system messages);
``/v1/completions`` answers each prompt as a user message: every policy here is a chat policy. Errors use
the OpenAI error JSON; nothing a client sends produces a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...core.errors import ConfigError, ParetoAlignError
from ...core.preference import Preference, parse_constraints
from ...generation import GenerationConfig
from ...generation.chat import prompt_token_ids
from .engine import Engine, ServedModel
from .scheduler import Answer, Delta, Failed, Finished, Job, QueueFullError
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingRequest, completion_id, error_body

log = logging.getLogger("paretoalign.server")

PLAYGROUND = Path(__file__).parent / "playground"
PUBLIC_PATHS = {"/": "index.html", "/playground.js": "playground.js"}
"""The playground's static files: the only routes answered without an API key."""
DEFAULT_MAX_TOKENS = 128
MAX_STOP_STRINGS = 4
DISCONNECT_POLL_S = 0.25
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class ServerSettings:
    """Limits and security of one server (the ``paretoalign serve`` flags)."""

    api_key: str | None = None
    max_batch_size: int = 32
    batch_wait_ms: float = 10.0
    max_queue: int = 256
    max_tokens_cap: int = 1024
    request_timeout_s: float = 300.0
    max_request_bytes: int = 1 << 20


class ApiError(Exception):
    """An error answered as OpenAI error JSON with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.kind, self.param, self.code), self.status,
                            headers=self.headers)


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 (OpenAI error JSON), by its Content-Length
    before it is read, or as soon as its chunks pass the limit."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit).response()(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413)  # FastAPI passes it through body parsing to our handler
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> "ApiError":
    return ApiError(413, f"the request body is larger than {limit} bytes (--max-request-bytes); send a shorter "
                         "prompt", code="request_too_large")


def create_app(models: Sequence[ServedModel], settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``models`` (each with its own engine) under ``settings``."""
    settings = settings or ServerSettings()
    engines = {model.id: Engine(model, max_batch_size=settings.max_batch_size,
                                batch_wait_s=settings.batch_wait_ms / 1000, max_queue=settings.max_queue)
               for model in models}
    if len(engines) != len(models):
        raise ConfigError("two served models have the same id; give each run its own folder name")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for engine in engines.values():
            await engine.start()
        yield
        for engine in engines.values():
            await engine.stop()

    app = FastAPI(title="paretoalign", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engines = engines
    app.add_middleware(_BodyLimit, limit=settings.max_request_bytes)
    _add_error_handlers(app, settings.max_request_bytes)
    routes = _Routes(engines, settings)
    authorized = [Depends(_auth(settings.api_key))]

    for path, name in PUBLIC_PATHS.items():
        app.add_api_route(path, _static(name), methods=["GET"], include_in_schema=False)
    app.add_api_route("/health", routes.health, methods=["GET"], dependencies=authorized)
    app.add_api_route("/v1/models", routes.list_models, methods=["GET"], dependencies=authorized)
    app.add_api_route("/v1/models/{model_id}", routes.get_model, methods=["GET"], dependencies=authorized)
    app.add_api_route("/v1/chat/completions", routes.chat, methods=["POST"], dependencies=authorized)
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"], dependencies=authorized)
    return app


def _static(name: str):
    media_type = "text/html" if name.endswith(".html") else "text/javascript"
    headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    async def serve_file() -> FileResponse:
        return FileResponse(PLAYGROUND / name, media_type=media_type, headers=headers)

    return serve_file


def _auth(api_key: str | None):
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'",
                           "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return check


def _add_error_handlers(app: FastAPI, max_bytes: int) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        if first.get("type") == "json_invalid":
            message, param = "the request body is not valid JSON", None
        return JSONResponse(error_body(message, param=param), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 413:
            return _too_large(max_bytes).response()
        message = f"no route {request.method} {request.url.path}" if error.status_code in (404, 405) else error.detail
        return JSONResponse(error_body(str(message)), error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error; see the server log", "server_error"), 500)


class _Routes:
    def __init__(self, engines: dict[str, Engine], settings: ServerSettings) -> None:
        self.engines = engines
        self.settings = settings

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": list(self.engines)}

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(engine.model) for engine in self.engines.values()]}

    async def get_model(self, model_id: str) -> dict[str, Any]:
        return _model_card(self._engine(model_id).model)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        prompt, system = _chat_prompt(body.messages)
        return await self._complete(body, request, [prompt], system, chat=True)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts or not all(prompt.strip() for prompt in prompts):
            raise ApiError(400, "prompt is empty; give it some text", param="prompt")
        return await self._complete(body, request, prompts, None, chat=False)

    def _engine(self, model_id: str) -> Engine:
        if model_id not in self.engines:
            raise ApiError(404, f"model {model_id!r} is not served here; served models: {', '.join(self.engines)}",
                           param="model", code="model_not_found")
        return self.engines[model_id]

    async def _complete(self, body: SamplingRequest, request: Request, prompts: list[str], system: str | None,
                        *, chat: bool) -> Response:
        engine = self._engine(body.model)
        problem = body.unsupported()
        if problem:
            raise ApiError(400, problem)
        preference, source = _preference(engine.model, body.preference)
        constraints = _constraints(engine.model, body.constraints)
        config = self._config(body, system)
        rows = [prompt for prompt in prompts for _ in range(body.n)]
        if len(rows) > self.settings.max_batch_size:
            raise ApiError(400, f"the request asks for {len(rows)} answers (prompts x n); this server answers at most "
                                f"{self.settings.max_batch_size} per request (--max-batch-size)", param="n")
        prompt_tokens = _prompt_tokens(engine.model, prompts, config)
        job = Job(rows, preference, config, constraints, stream=body.stream, want_scores=body.return_scores)
        try:
            engine.submit(job)
        except QueueFullError as error:
            raise ApiError(503, str(error), "server_overloaded", code="queue_full",
                           headers={"Retry-After": str(error.retry_after)}) from None
        reply = _Reply(engine.model.id, chat, body.n, prompt_tokens, _applied(preference, source))
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self._stream(engine, job, reply, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        answers = await self._wait(engine, job, request)
        if answers is None:
            return Response(status_code=499)  # the client has gone; nobody reads this
        return JSONResponse(reply.full(answers))

    def _config(self, body: SamplingRequest, system: str | None) -> GenerationConfig:
        cap = self.settings.max_tokens_cap
        max_tokens = body.max_completion_tokens or body.max_tokens or min(DEFAULT_MAX_TOKENS, cap)
        if max_tokens > cap:
            raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {cap} (--max-tokens-cap)",
                           param="max_tokens")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP_STRINGS or not all(stop):
            raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", param="stop")
        temperature = 1.0 if body.temperature is None else body.temperature
        return GenerationConfig(max_new_tokens=max_tokens, temperature=temperature if temperature > 0 else 1.0,
                                do_sample=temperature > 0, top_p=1.0 if body.top_p is None else body.top_p,
                                stop=tuple(stop), seed=body.seed, batch_size=1, system_prompt=system)

    def _timeout(self, engine: Engine, job: Job) -> ApiError:
        engine.cancel(job)
        return ApiError(504, f"the request took longer than {self.settings.request_timeout_s:g} s (--request-timeout); "
                             "retry, or ask for fewer tokens", "timeout_error", code="timeout")

    async def _wait(self, engine: Engine, job: Job, request: Request) -> list[Answer] | None:
        """The job's answers; None when the client disconnected first (its place in the queue is freed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._timeout(engine, job)
            try:
                event = await asyncio.wait_for(job.events.get(), min(remaining, DISCONNECT_POLL_S))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    engine.cancel(job)
                    return None
                continue
            if isinstance(event, Finished):
                return event.answers
            if isinstance(event, Failed):
                raise _api_error(event.error)

    async def _stream(self, engine: Engine, job: Job, reply: "_Reply", usage: bool) -> AsyncIterator[str]:
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        finished = False
        try:
            for index in range(reply.n if reply.chat else 0):  # chat streams open with the assistant role
                yield _sse(reply.chunk(index, "", first=True))
            while True:
                try:
                    remaining = max(deadline - asyncio.get_running_loop().time(), 0)
                    event = await asyncio.wait_for(job.events.get(), remaining)
                except asyncio.TimeoutError:
                    error = self._timeout(engine, job)
                    yield _sse(error_body(error.message, error.kind, code=error.code))
                    return
                if isinstance(event, Delta):
                    yield _sse(reply.chunk(event.row, event.text))
                elif isinstance(event, Failed):
                    error = _api_error(event.error)
                    yield _sse(error_body(error.message, error.kind, code=error.code))
                    return
                else:
                    for index, answer in enumerate(event.answers):
                        yield _sse(reply.last_chunk(index, answer))
                    if usage:
                        yield _sse(reply.usage_chunk(event.answers))
                    yield "data: [DONE]\n\n"
                    finished = True
                    return
        finally:
            if not finished:
                engine.cancel(job)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _api_error(error: Exception) -> ApiError:
    if isinstance(error, ParetoAlignError):
        return ApiError(400, str(error))
    return ApiError(500, "internal server error; see the server log", "server_error")


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    kinds = [part.type for part in message.content if part.type != "text"]
    if kinds:
        raise ApiError(400, f"message content of type {kinds[0]!r} is not supported; send text", param="messages")
    return "".join(part.text or "" for part in message.content)


def _chat_prompt(messages: Sequence[ChatMessage]) -> tuple[str, str | None]:
    """The user message to answer and the system prompt (system/developer messages joined), if any."""
    system = [_text(m) for m in messages if m.role in ("system", "developer")]
    turns = [m for m in messages if m.role not in ("system", "developer")]
    if len(turns) != 1 or turns[0].role != "user":
        roles = ", ".join(m.role for m in turns) or "none"
        raise ApiError(400, f"this server answers one user message (after optional system messages); got turns: "
                            f"{roles}. Put the conversation into one user message", param="messages")
    prompt = _text(turns[0])
    if not prompt.strip():
        raise ApiError(400, "the user message is empty; give it some text", param="messages")
    return prompt, "\n\n".join(system) or None


def _preference(model: ServedModel, spec: dict[str, Any] | str | None) -> tuple[Preference | None, str]:
    """The preference to apply and where it came from: ``request``, ``default`` or ``ignored``."""
    if not model.objectives:
        return None, "ignored" if spec is not None else "default"
    if spec is None:
        return model.default_preference, "default"
    try:
        return Preference.parse(spec, known=model.objectives, normalize=True), "request"
    except ConfigError as error:
        raise ApiError(400, f"bad preference: {error}", param="preference", code="invalid_preference") from None


def _constraints(model: ServedModel, spec: str | list[str] | None) -> tuple:
    if not spec:
        return ()
    if model.constraint_objectives is None:
        raise ApiError(400, f"model {model.id!r} (method {model.method}) takes no constraints; remove 'constraints' "
                            "or serve a constrained method", param="constraints")
    try:
        return tuple(parse_constraints(spec, known=model.constraint_objectives))
    except ConfigError as error:
        raise ApiError(400, f"bad constraints: {error}", param="constraints") from None


def _prompt_tokens(model: ServedModel, prompts: Sequence[str], config: GenerationConfig) -> int:
    """Prompt tokens of the request (each prompt as rendered for the model); refuses what overflows the context."""
    counts = [len(ids) for ids in prompt_token_ids(model.tokenizer, prompts, config.system_prompt)]
    context = model.context_length
    if context is not None and max(counts) + config.max_new_tokens > context:
        raise ApiError(400, f"the prompt has {max(counts)} tokens; with max_tokens {config.max_new_tokens} that "
                            f"exceeds the model's context of {context} tokens", param="messages",
                       code="context_length_exceeded")
    return sum(counts)


def _applied(preference: Preference | None, source: str) -> dict[str, Any]:
    return {"weights": preference.as_dict() if preference is not None else None, "source": source}


def _model_card(model: ServedModel) -> dict[str, Any]:
    """``/v1/models`` entry: OpenAI's fields plus method, base model, objectives and the default preference."""
    return {
        "id": model.id, "object": "model", "created": model.created, "owned_by": "paretoalign",
        "method": model.method, "base_model": model.base_model,
        "objectives": [_objective_card(model, name) for name in model.objectives],
        "default_preference": model.default_preference.as_dict() if model.default_preference else None,
        "mixes_preferences": model.mixes_preferences,
        "constraint_objectives": model.constraint_objectives,
    }


def _objective_card(model: ServedModel, name: str) -> dict[str, Any]:
    scorer = model.scorers.get(name)
    if scorer is None:
        return {"name": name, "description": "", "direction": None, "unit": None}
    return {"name": name, "description": scorer.description,
            "direction": "lower is better" if scorer.direction < 0 else "higher is better", "unit": scorer.unit}


class _Reply:
    """Formats one request's chunks and final body (chat or text completion)."""

    def __init__(self, model_id: str, chat: bool, n: int, prompt_tokens: int, applied: dict[str, Any]) -> None:
        self.id, self.created = completion_id("chatcmpl" if chat else "cmpl")
        self.model_id, self.chat, self.prompt_tokens, self.applied = model_id, chat, prompt_tokens, applied
        self.n = n
        self.object = "chat.completion" if chat else "text_completion"

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id, "choices": choices}

    def _choice(self, index: int, text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    def chunk(self, index: int, text: str, first: bool = False) -> dict[str, Any]:
        return self._envelope([self._choice(index, text, None, first)], chunk=True)

    def last_chunk(self, index: int, answer: Answer) -> dict[str, Any]:
        choice = self._choice(index, "", FINISH_REASONS[answer.finish_reason]) | _extras(answer)
        return self._envelope([choice], chunk=True) | {"preference_applied": self._applied(answer)}

    def usage_chunk(self, answers: Sequence[Answer]) -> dict[str, Any]:
        return self._envelope([], chunk=True) | {"usage": self._usage(answers)}

    def full(self, answers: Sequence[Answer]) -> dict[str, Any]:
        choices = []
        for index, answer in enumerate(answers):
            finish = FINISH_REASONS[answer.finish_reason]
            if self.chat:
                choice = {"index": index, "message": {"role": "assistant", "content": answer.text},
                          "finish_reason": finish, "logprobs": None}
            else:
                choice = self._choice(index, answer.text, finish)
            choices.append(choice | _extras(answer))
        body = self._envelope(choices, chunk=False)
        return body | {"usage": self._usage(answers), "preference_applied": self._applied(answers[0])}

    def _applied(self, answer: Answer) -> dict[str, Any]:
        return self.applied | {"steering": answer.steering}

    def _usage(self, answers: Sequence[Answer]) -> dict[str, int]:
        completion = sum(answer.completion_tokens for answer in answers)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}


def _extras(answer: Answer) -> dict[str, Any]:
    if answer.scores is None:
        return {}
    return {"scores": answer.scores["scores"], "raw_scores": answer.scores["raw"]}
