"""Chat backends for judges and critics: conversations in, assistant replies out.

    backend.chat(conversations, max_tokens=16, temperature=0.0, seed=0) -> list[str | None]
    backend.letter_probs(conversations, letters=("A", "B", "C")) -> list[dict[str, float] | None]

``letter_probs`` gives, per conversation, P(X) for each letter X at the first reply token:
the sum of the next-token probabilities of every token whose text, stripped of whitespace, is X
("A" and " A" alike). The values are raw probabilities (they need not sum to 1); the judge
decides what to do with the rest of the mass (``alignkit.judges.llm``).

``LocalChat``  a model in this process, through the rollout engine (one batched call); letter
               probabilities from one teacher-forced forward of the templated prompts.
``OpenAIChat`` any OpenAI-compatible endpoint (OpenAI, vLLM, ``alignkit serve``) through the
               official ``openai`` client: the key read from an environment variable and never
               logged or cached; retries with exponential backoff on transient failures only;
               a timeout per request; at most ``concurrency`` requests in flight; every reply
               cached on disk under the hash of its request, so a rerun costs nothing. Letter
               probabilities ask for one token with ``logprobs`` and the top 20
               alternatives: a letter outside the endpoint's top 20 counts as 0.

A reply is None when the backend could not produce one (e.g. the endpoint kept failing): judges
count those, they never guess them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Sequence

log = logging.getLogger(__name__)

LETTERS = ("A", "B", "C")  # the judge's verdicts: Response A, Response B, a tie


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: Sequence[list[dict]], *, max_tokens: int = 256, temperature: float = 0.0,
             seed: int = 0) -> list[str | None]:
        """One assistant reply per conversation (chat messages), in order."""
        ...

    def letter_probs(self, conversations: Sequence[list[dict]],
                     letters: Sequence[str] = LETTERS) -> list[dict[str, float] | None]:
        """Per conversation, {letter: P(first reply token is that letter)}; None when not available."""
        ...


# Conversations per teacher-forced forward in LocalChat.letter_probs: bounds the activations
# (B, T, hidden) of long judge prompts; the logits are kept at the last position only.
_SCORE_BATCH = 16


def letter_token_ids(tokenizer, letters: Sequence[str]) -> dict[str, list[int]]:
    """Every token id whose text, stripped, is the letter: e.g. {"A": [id("A"), id(" A")], ...}.

    A scan of the whole vocabulary (about 0.4 s for 49k tokens), so that any spelling the
    tokenizer has ("A", " A", a newline then "A") counts, the same rule ``OpenAIChat`` applies to token texts."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    wanted = set(letters)
    ids: dict[str, list[int]] = {letter: [] for letter in letters}
    for token_id, text in enumerate(texts):
        if text.strip() in wanted:
            ids[text.strip()].append(token_id)
    return ids


class LocalChat:
    """A causal LM in this process. ``engine_options`` go to ``make_engine`` (e.g. ``max_batch``)."""

    def __init__(self, model, tokenizer, *, name: str = "local", **engine_options):
        from alignkit.rollout import make_engine

        self.name = name
        self.model, self.tokenizer = model.eval(), tokenizer
        self.engine = make_engine(self.model, tokenizer, **engine_options)
        self._letter_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}

    @classmethod
    def load(cls, path: str, *, dtype=None, **engine_options) -> "LocalChat":
        """A run's model directory, LoRA adapter, hub id or alias (in ``dtype``, default: ``default_placement``'s)."""
        from alignkit.models import load_policy, load_tokenizer

        return cls(load_policy(path, dtype=dtype), load_tokenizer(path), name=str(path), **engine_options)

    def chat(self, conversations, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> list[str | None]:
        if not conversations:
            return []
        rollouts = self.engine.generate(list(conversations), max_new_tokens=max_tokens, temperature=temperature, seed=seed)
        return [text.strip() for text in rollouts.texts]

    def letter_probs(self, conversations, letters: Sequence[str] = LETTERS) -> list[dict[str, float] | None]:
        """softmax(logits at the last prompt position) summed over each letter's token ids.

        The prompt is the chat template with the generation prompt (what ``chat`` decodes from),
        left-padded so that the last column is every row's next-token position."""
        import torch

        from alignkit.rollout.engine import encode_prompt

        letters = tuple(letters)
        if letters not in self._letter_ids:
            self._letter_ids[letters] = letter_token_ids(self.tokenizer, letters)
        ids_of = self._letter_ids[letters]
        encoded = [encode_prompt(self.tokenizer, c) for c in conversations]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out: list[dict[str, float] | None] = []
        for start in range(0, len(encoded), _SCORE_BATCH):
            rows = encoded[start : start + _SCORE_BATCH]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)  # (B, T)
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            # Left padding would shift each row's positions: count them from its first real token
            # (RoPE models could not tell, learned absolute positions, e.g. GPT-2, could).
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    logits_to_keep=1).logits[:, -1]  # (B, V)
            probs = logits.float().softmax(-1)
            for row in probs:
                out.append({letter: float(row[ids].sum()) if ids else 0.0 for letter, ids in ids_of.items()})
        return out


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
    timeout_s     per request: 600 s, the official client's default (a CPU-served model under load
                  can take minutes, and a request that timed out is computed again on retry)
    retries / backoff_s: attempts after the first, and the first delay (doubled each time, with
                  jitter); concurrency: requests in flight at most
    cache_dir     where replies are kept by request hash (None: no cache)
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 600.0,
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
        replies = self._all(requests, _reply_text)
        return [None if r is None else r["text"] for r in replies]

    def letter_probs(self, conversations, letters: Sequence[str] = LETTERS) -> list[dict[str, float] | None]:
        """From the top 20 log-probs of one greedy token: P(X) = Σ exp(logprob) over the listed tokens
        whose text, stripped, is X. None when the endpoint gave no log-probs (or no answer)."""
        requests = [{"model": self.model, "messages": list(c), "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                     "top_logprobs": 20} for c in conversations]
        replies = self._all(requests, _reply_top_logprobs)
        return [None if r is None or r["top_logprobs"] is None else letter_sums(r["top_logprobs"], letters) for r in replies]

    def _all(self, requests: list[dict], read) -> list[dict | None]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda request: self._one(request, read), requests))

    def _one(self, request: dict, read) -> dict | None:
        """``read(completion)``: the JSON-able part of the answer that is cached and returned."""
        if self.cache is not None:
            hit = self.cache.get(self.base_url, request)
            if hit is not None:
                return hit
        reply = self._send(request, read)
        if reply is not None and self.cache is not None:
            self.cache.put(self.base_url, request, reply)
        return reply

    def _send(self, request: dict, read) -> dict | None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                with self._count:
                    self.calls += 1
                return read(self._client.chat.completions.create(**request))
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


def _reply_text(completion) -> dict:
    return {"text": completion.choices[0].message.content or ""}


def _reply_top_logprobs(completion) -> dict:
    """{"top_logprobs": [[token, logprob], ...]} of the first reply token; None inside when the
    endpoint sent no log-probs (kept, so that a rerun does not ask again for what it will not get)."""
    logprobs = completion.choices[0].logprobs
    if logprobs is None or not logprobs.content:
        return {"top_logprobs": None}
    return {"top_logprobs": [[t.token, t.logprob] for t in logprobs.content[0].top_logprobs]}


def letter_sums(top_logprobs: list[list], letters: Sequence[str]) -> dict[str, float]:
    """{letter: Σ exp(logprob) over the (token, logprob) pairs whose token, stripped, is the letter}."""
    sums = {letter: 0.0 for letter in letters}
    for token, logprob in top_logprobs:
        if token.strip() in sums:
            sums[token.strip()] += math.exp(logprob)
    return sums


class ReplyCache:
    """Replies on disk, one JSON file per request: ``<dir>/<sha256 of (base_url, request)>.json``.

    The hash covers everything that changes the answer (endpoint, model, messages, max_tokens,
    temperature, seed, logprobs) and nothing secret (the key is not part of a request body). Files are
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
