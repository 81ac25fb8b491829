"""Chat backends: the local engine, and an OpenAI-compatible endpoint through the official client
(alignkit serve on loopback; a scripted flaky endpoint for retries and timeouts): key from the
environment and never shown, transient failures retried with backoff, 4xx not retried, the disk
cache making a rerun free."""

import time

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from alignkit.judges.chat import LocalChat, OpenAIChat, ReplyCache
from alignkit.serve import BackgroundServer, create_app

KEY_VAR, KEY = "ALIGNKIT_TEST_CHAT_KEY", "chat-test-key-0123"
CONVERSATIONS = [[{"role": "user", "content": f"Name a colour, {i}."}] for i in range(5)]


@pytest.fixture(scope="module")
def tiny_engine_parts():
    from alignkit.models import tiny_model

    model, tokenizer = tiny_model(seed=0)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def served(tiny_engine_parts):
    from alignkit.rollout import make_engine

    model, tokenizer = tiny_engine_parts
    app = create_app(make_engine(model, tokenizer, max_batch=8), tokenizer, model_name="tiny", context_length=2048, api_key=KEY)
    with BackgroundServer(app) as url:
        yield url


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


@pytest.fixture()
def flaky():
    """An endpoint that fails with ``plan`` (status codes, "slow" to sleep past the timeout) and then answers "ok"."""
    app, state = FastAPI(), {"plan": [], "hits": 0}

    @app.post("/v1/chat/completions")
    async def chat():
        state["hits"] += 1
        step = state["plan"].pop(0) if state["plan"] else 200
        if step == "slow":
            import asyncio

            await asyncio.sleep(2)
            step = 200
        if step != 200:
            return JSONResponse({"error": {"message": "nope", "type": "x", "param": None, "code": None}}, status_code=step)
        return completion("ok")

    with BackgroundServer(app) as url:
        yield url, state


def test_local_chat_one_reply_per_conversation(tiny_engine_parts):
    backend = LocalChat(*tiny_engine_parts, max_batch=4)
    replies = backend.chat(CONVERSATIONS, max_tokens=4)
    assert len(replies) == 5 and all(isinstance(r, str) for r in replies)
    assert replies == backend.chat(CONVERSATIONS, max_tokens=4)  # greedy: the same again
    assert backend.chat([], max_tokens=4) == []


def test_endpoint_against_alignkit_serve_with_cache(served, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_VAR, KEY)
    backend = OpenAIChat(served, "tiny", api_key_env=KEY_VAR, cache_dir=tmp_path / "cache", concurrency=3)
    with caplog.at_level("DEBUG"):
        first = backend.chat(CONVERSATIONS, max_tokens=5)
    assert len(first) == 5 and all(isinstance(r, str) for r in first) and backend.calls == 5
    assert len(list((tmp_path / "cache").glob("*.json"))) == 5
    again = OpenAIChat(served, "tiny", api_key_env=KEY_VAR, cache_dir=tmp_path / "cache")
    assert again.chat(CONVERSATIONS, max_tokens=5) == first and again.calls == 0  # a rerun costs nothing
    assert again.chat(CONVERSATIONS[:1], max_tokens=6) and again.calls == 1  # another request, another key
    for text in (repr(backend), caplog.text, *(p.read_text() for p in (tmp_path / "cache").glob("*.json"))):
        assert KEY not in text


def test_endpoint_key_must_be_set_and_right(served, monkeypatch):
    import openai

    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(ValueError, match=KEY_VAR):
        OpenAIChat(served, "tiny", api_key_env=KEY_VAR)
    monkeypatch.setenv(KEY_VAR, "wrong")
    backend = OpenAIChat(served, "tiny", api_key_env=KEY_VAR, backoff_s=0.01)
    with pytest.raises(openai.AuthenticationError):
        backend.chat(CONVERSATIONS[:1], max_tokens=2)
    assert backend.calls == 1  # a 401 is not retried


def test_transient_errors_are_retried_with_backoff(flaky):
    url, state = flaky
    state["plan"] = [503, 500, 429]
    backend = OpenAIChat(url, "m", api_key_env=None, retries=4, backoff_s=0.05)
    start = time.perf_counter()
    assert backend.chat(CONVERSATIONS[:1], max_tokens=2) == ["ok"]
    assert state["hits"] == 4 and backend.calls == 4
    assert time.perf_counter() - start >= 0.05 * 0.5 * (1 + 2 + 4)  # jittered delays doubling: at least half of each


def test_retries_run_out_into_none_and_4xx_raise(flaky):
    import openai

    url, state = flaky
    state["plan"] = [503, 503, 503]
    backend = OpenAIChat(url, "m", api_key_env=None, retries=2, backoff_s=0.01)
    assert backend.chat(CONVERSATIONS[:1], max_tokens=2) == [None]  # no answer: counted by the judge, not guessed
    assert state["hits"] == 3
    state["plan"], state["hits"] = [400], 0
    with pytest.raises(openai.BadRequestError):
        backend.chat(CONVERSATIONS[:1], max_tokens=2)
    assert state["hits"] == 1


def test_timeout_counts_as_transient(flaky):
    url, state = flaky
    state["plan"] = ["slow"]
    backend = OpenAIChat(url, "m", api_key_env=None, timeout_s=0.3, retries=1, backoff_s=0.01)
    assert backend.chat(CONVERSATIONS[:1], max_tokens=2) == ["ok"]
    assert state["hits"] == 2


def test_concurrency_limit(flaky):
    url, state = flaky
    state["plan"] = ["slow"] * 4  # each request sleeps 2 s
    backend = OpenAIChat(url, "m", api_key_env=None, timeout_s=10, concurrency=4)
    start = time.perf_counter()
    assert backend.chat(CONVERSATIONS[:4], max_tokens=2) == ["ok"] * 4
    assert time.perf_counter() - start < 4  # in parallel, not 4 × 2 s one after another


def test_cache_key_covers_what_changes_the_answer():
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0.0, "seed": 0}
    key = ReplyCache.key("http://x/v1", request)
    assert key == ReplyCache.key("http://x/v1/", dict(reversed(list(request.items()))))
    for change in ({"model": "n"}, {"max_tokens": 6}, {"temperature": 1.0}, {"seed": 1},
                   {"messages": [{"role": "user", "content": "hi!"}]}):
        assert ReplyCache.key("http://x/v1", {**request, **change}) != key
    assert ReplyCache.key("http://y/v1", request) != key
