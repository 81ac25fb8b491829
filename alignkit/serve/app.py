"""The FastAPI application: routes, the API key check and OpenAI-shaped errors.

    GET  /health                 liveness and batching counters (no key needed: probes carry none)
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat, streamed (server-sent events) or not, through the ``Batcher``

Log-probs (non-streamed only): after generation, one teacher-forced forward of ``model`` per
choice on the engine's worker thread (``alignkit.serve.logprobs``).

Streaming: the engine returns whole completions, so a streamed answer is sent as word-sized
deltas once its batch is done. The wire format is OpenAI's (role delta, content deltas, a final
chunk with finish_reason, optional usage chunk, ``data: [DONE]``) but the first token arrives no
earlier than with ``stream: false``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from alignkit.serve import protocol
from alignkit.serve.batcher import Batcher, Sampling
from alignkit.serve.logprobs import completion_logprobs
from alignkit.serve.protocol import ApiError, ChatRequest

log = logging.getLogger(__name__)


def create_app(engine, tokenizer, *, model, model_name: str, context_length: int, api_key: str | None = None,
               max_n: int = 16, default_max_tokens: int = 256, window_s: float = 0.005) -> FastAPI:
    """An app serving ``engine`` under ``model_name``. ``model``: the torch model the engine was made
    from, which scores completions for ``logprobs``. ``api_key``: when set, every /v1 request must
    send ``Authorization: Bearer <api_key>``."""
    batcher = Batcher(engine, tokenizer, window_s=window_s)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="alignkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1"):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # compare_digest: the time taken does not reveal how much of the key matched.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
                return _error(ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                                       code="invalid_api_key"))
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        return _error(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        message = f"Unknown request URL: {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _error(ApiError(exc.status_code, message, code="unknown_url" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return _error(ApiError(500, "The server failed to generate a response; see its log.", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "batching": batcher.stats.as_dict()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [protocol.model_card(model_name, created)]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):  # named so as not to shadow the scoring `model`
        if name != model_name:
            raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return protocol.model_card(model_name, created)

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        request.refuse_unsupported()
        if request.model != model_name:
            raise ApiError(404, f"The model '{request.model}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")
        n = request.n or 1
        if n > max_n:
            raise ApiError(400, f"n must be at most {max_n} on this server, got {n}", param="n", code="invalid_value")
        prompt_ids = list(tokenizer.apply_chat_template([m.as_chat() for m in request.messages], add_generation_prompt=True,
                                                        tokenize=True, return_dict=True)["input_ids"])
        room = context_length - len(prompt_ids)
        asked = request.max_completion_tokens or request.max_tokens
        if room < 1 or (asked is not None and asked > room):
            raise ApiError(400, f"This model's maximum context length is {context_length} tokens; the messages take "
                           f"{len(prompt_ids)} and {asked or 1} more were requested.", param="messages",
                           code="context_length_exceeded")
        sampling = Sampling(
            n=n, temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p, max_tokens=asked or min(default_max_tokens, room),
            stop=request.stop_strings(), seed=request.seed,
        )
        choices = await batcher.submit(prompt_ids, sampling)
        cid = protocol.completion_id()
        if not request.stream:
            logprobs = None
            if request.logprobs:
                top = request.top_logprobs or 0
                logprobs = await batcher.call(lambda: [completion_logprobs(model, tokenizer, prompt_ids, c.token_ids, top)
                                                       for c in choices])
            return protocol.completion(cid, model_name, choices, len(prompt_ids), logprobs)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return StreamingResponse(_events(cid, model_name, choices, len(prompt_ids), include_usage),
                                 media_type="text/event-stream")

    return app


def _events(cid: str, model_name: str, choices, prompt_tokens: int, include_usage: bool):
    """Server-sent events of a finished completion, in OpenAI's chunk order."""
    created = int(time.time())

    def event(choices_, usage=None) -> str:
        return "data: " + json.dumps(protocol.chunk(cid, created, model_name, choices_, usage)) + "\n\n"

    for i, choice in enumerate(choices):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
        for piece in re.findall(r"\s*\S+|\s+", choice.text):  # word-sized deltas that concatenate to the text
            yield event([{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        yield event([{"index": i, "delta": {}, "logprobs": None, "finish_reason": choice.finish_reason}])
    if include_usage:
        yield event([], protocol.usage(prompt_tokens, sum(c.tokens for c in choices)))
    yield "data: [DONE]\n\n"


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 list → OpenAI's single 400: the first problem, with the parameter it concerns."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "We could not parse the JSON body of your request: it is not valid JSON.", code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param is None:
        return ApiError(400, f"The request body must be a JSON object: {first.get('msg', 'invalid')}.", code="invalid_request")
    return ApiError(400, f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param, code="invalid_value")
