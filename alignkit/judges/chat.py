"""Chat backends for judges and critics: conversations in, assistant replies out.

    backend.chat(conversations, max_tokens=16, temperature=0.0, seed=0) -> list[str | None]

``LocalChat``  a model in this process, through the rollout engine (one batched call).
``OpenAIChat`` any OpenAI-compatible endpoint (OpenAI, vLLM, ``alignkit serve``) through the
               official ``openai`` client: the key read from an environment variable and never
               logged or cached; retries with exponential backoff on transient failures only;
               a timeout per request; at most ``concurrency`` requests in flight; every reply
               cached on disk under the hash of its request, so a rerun costs nothing.

A reply is None when the backend could not produce one (e.g. the endpoint kept failing): judges
count those, they never guess them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Sequence

log = logging.getLogger(__name__)


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: Sequence[list[dict]], *, max_tokens: int = 256, temperature: float = 0.0,
             seed: int = 0) -> list[str | None]:
        """One assistant reply per conversation (chat messages), in order."""
        ...


class LocalChat:
    """A causal LM in this process. ``engine_options`` go to ``make_engine`` (e.g. ``max_batch``)."""

    def __init__(self, model, tokenizer, *, name: str = "local", **engine_options):
        from alignkit.rollout import make_engine

        self.name = name
        self.engine = make_engine(model.eval(), tokenizer, **engine_options)

    @classmethod
    def load(cls, path: str, **engine_options) -> "LocalChat":
        """A run's model directory, LoRA adapter, hub id or alias."""
        from alignkit.models import load_policy, load_tokenizer

        return cls(load_policy(path), load_tokenizer(path), name=str(path), **engine_options)

    def chat(self, conversations, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> list[str | None]:
        if not conversations:
            return []
        rollouts = self.engine.generate(list(conversations), max_new_tokens=max_tokens, temperature=temperature, seed=seed)
        return [text.strip() for text in rollouts.texts]


# Failures worth another try: the network, a timeout, rate limits, the server's own errors (5xx).
# A 4xx (bad request, wrong key, unknown model) will fail the same way again.
def _transient(exc: Exception) -> bool:
    import openai

    return isinstance(exc, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)) or (
        isinstance(exc, openai.APIStatusError) and exc.status_code >= 500)


class OpenAIChat:
    """An OpenAI-compatible endpoint.

    base_url      e.g. "http://127.0.0.1:8000/v1" (alignkit serve) or "https://api.openai.com/v1"
    model         the model id the endpoint serves
    api_key_env   the environment variable holding the key; None for endpoints without one
    timeout_s     per request; retries / backoff_s: attempts after the first, and the first delay
                  (doubled each time, with jitter); concurrency: requests in flight at most
    cache_dir     where replies are kept by request hash (None: no cache)
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 retries: int = 4, backoff_s: float = 1.0, concurrency: int = 8, cache_dir: str | os.PathLike | None = None):
        import openai

        key = "not-needed"  # the client insists on a string; endpoints without auth ignore it
        if api_key_env is not None:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise ValueError(f"the chat endpoint's key variable {api_key_env} is not set or is empty "
                                 f"(pass api_key_env=None for an endpoint without a key)")
        self.name = f"{model}@{base_url}"
        self.base_url, self.model = base_url, model
        self.retries, self.backoff_s, self.concurrency = retries, backoff_s, concurrency
        self.cache = ReplyCache(cache_dir) if cache_dir is not None else None
        self.calls = 0  # requests actually sent (cache hits excluded), for tests and logs
        self._count = threading.Lock()
        # The client's own retries are off: ours are explicit, counted and limited to transient errors.
        self._client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r})"

    def chat(self, conversations, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> list[str | None]:
        requests = [{"model": self.model, "messages": list(c), "max_tokens": max_tokens, "temperature": temperature,
                     "seed": seed} for c in conversations]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: dict) -> str | None:
        if self.cache is not None:
            hit = self.cache.get(self.base_url, request)
            if hit is not None:
                return hit["text"]
        text = self._send(request)
        if text is not None and self.cache is not None:
            self.cache.put(self.base_url, request, {"text": text})
        return text

    def _send(self, request: dict) -> str | None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                with self._count:
                    self.calls += 1
                reply = self._client.chat.completions.create(**request)
                return reply.choices[0].message.content or ""
            except Exception as exc:
                if not _transient(exc) or attempt == self.retries:
                    # Logged by type and status only: an exception's text can echo request headers.
                    log.warning("chat request to %s failed (%s%s) after %d attempt(s)", self.base_url, type(exc).__name__,
                                f" {exc.status_code}" if hasattr(exc, "status_code") else "", attempt + 1)
                    if _transient(exc):
                        return None  # counted by the caller as "no answer"
                    raise
                time.sleep(delay * (0.5 + random.random()))  # jitter: clients that failed together retry apart
                delay *= 2
        return None


class ReplyCache:
    """Replies on disk, one JSON file per request: ``<dir>/<sha256 of (base_url, request)>.json``.

    The hash covers everything that changes the answer (endpoint, model, messages, max_tokens,
    temperature, seed) and nothing secret (the key is not part of a request body). Files are
    written to a temporary name and renamed, so concurrent writers and a kill never leave half a file.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(base_url: str, request: dict) -> str:
        canonical = json.dumps({"base_url": base_url.rstrip("/"), "request": request}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, base_url: str, request: dict) -> dict | None:
        path = self.directory / f"{self.key(base_url, request)}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))["reply"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, base_url: str, request: dict, reply: dict) -> None:
        path = self.directory / f"{self.key(base_url, request)}.json"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"request": request, "reply": reply}, f, ensure_ascii=False)
        os.replace(tmp, path)
