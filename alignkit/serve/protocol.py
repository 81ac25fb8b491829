"""The OpenAI chat-completions wire format: the request we accept and the objects we return.

Only what a local model can honour is accepted. Parameters that would silently change meaning if
ignored (tools, response_format, ...) are refused with a 400 naming the parameter, the way the
OpenAI API refuses an unknown value, instead of being dropped.

``logprobs`` / ``top_logprobs`` (0..20, only with ``logprobs: true``) are honoured on non-streamed
requests (``alignkit.serve.logprobs``); streamed with log-probs is refused with a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Accepted by the OpenAI API but not implemented here: refused when set to anything but null/false.
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "audio", "modalities",
               "prediction", "web_search_options", "logit_bias")


class ApiError(Exception):
    """An error to answer with OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. "name": harmless to drop

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_chat(self) -> dict:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        # "developer" is the newer name of the system role; chat templates know only "system".
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. null means "the default", as in the OpenAI API."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, stop):
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(s for s in stops if s)

    def refuse_unsupported(self) -> None:
        for name in UNSUPPORTED:
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, [], {}):
                raise ApiError(400, f"'{name}' is not supported by alignkit serve", param=name, code="unsupported_parameter")
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs", code="invalid_value")
        if self.logprobs and self.stream:
            raise ApiError(400, "'logprobs' is supported only without streaming by alignkit serve: send 'stream': false.",
                           param="logprobs", code="unsupported_parameter")


FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # engine reason -> OpenAI finish_reason


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, choices: list, prompt_tokens: int, logprobs: list[dict] | None = None) -> dict:
    """A non-streamed chat.completion; ``choices``: objects with .text, .finish_reason, .tokens;
    ``logprobs``: each choice's logprobs object, when they were asked for."""
    completion_tokens = sum(c.tokens for c in choices)
    logprobs = logprobs or [None] * len(choices)
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model, "system_fingerprint": None,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": lp, "finish_reason": c.finish_reason}
            for i, (c, lp) in enumerate(zip(choices, logprobs))
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chunk(cid: str, created: int, model: str, choices: list[dict], usage_: dict | None = None) -> dict:
    """One chat.completion.chunk of a stream."""
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None,
           "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "alignkit"}
