"""Chat backends: the local engine, and an OpenAI-compatible endpoint through the official client
(alignkit serve on loopback; a scripted flaky endpoint for retries and timeouts): key from the
environment and never shown, transient failures retried with backoff, 4xx not retried, the disk
cache making a rerun free. Letter probabilities: LocalChat against a direct softmax, and the
endpoint (alignkit serve's logprobs) against LocalChat on the same model."""

import math
import time

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from alignkit.judges.chat import LocalChat, OpenAIChat, ReplyCache
from alignkit.judges.llm import judge_messages
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
    app = create_app(make_engine(model, tokenizer, max_batch=8), tokenizer, model=model, model_name="tiny", context_length=2048,
                     api_key=KEY)
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
                   {"messages": [{"role": "user", "content": "hi!"}]}, {"logprobs": True, "top_logprobs": 20}):
        assert ReplyCache.key("http://x/v1", {**request, **change}) != key
    assert ReplyCache.key("http://y/v1", request) != key


# Judge prompts of different lengths (left padding), more than one forward batch of LocalChat (16).
JUDGE_CONVERSATIONS = [judge_messages([{"role": "user", "content": f"question {i}" + " and more" * (i % 5)}],
                                      f"answer {i}", f"a reply of {i * 7} words") for i in range(20)]


def template_ids(tokenizer, conversation) -> list[int]:
    return list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


@pytest.fixture(scope="module")
def letter_judge():
    """(model, tokenizer): a tiny random model that answers a judge prompt with a letter most of the
    time, with A, B and C mixed differently per prompt. Its lm_head rows of the six letter tokens
    ("A", " A", ...) are set so their logits are about 10-11 along the mean last hidden state, plus a
    random part along how each prompt's hidden state differs from the mean (std ~2); every other
    token's logit stays near 0 (std ~0.16), so the letters are always among the top 20."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.models import load_tokenizer
    from alignkit.models.tiny import tiny_config
    from alignkit.rollout.engine import encode_prompt

    torch.set_num_threads(1)
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    config = tiny_config(tokenizer)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    letters = tokenizer.convert_tokens_to_ids(["A", "ĠA", "B", "ĠB", "C", "ĠC"])
    with torch.no_grad():
        hidden = torch.stack([model.model(torch.tensor([encode_prompt(tokenizer, c)])).last_hidden_state[0, -1]
                              for c in JUDGE_CONVERSATIONS[:8]])  # (8, H)
        mean = hidden.mean(0)
        spread = (hidden - mean).norm(dim=1).mean()
        random = torch.randn(len(letters), config.hidden_size, generator=torch.Generator().manual_seed(1))
        random -= (random @ mean)[:, None] * mean / (mean @ mean)  # orthogonal to the mean: per-prompt only
        base = torch.tensor([11.0, 10.5, 10.5, 10.0, 10.5, 10.0])[:, None]
        model.lm_head.weight[letters] = base * mean / (mean @ mean) + random * 2.0 / spread
    return model, tokenizer


@pytest.fixture(scope="module")
def served_letter_judge(letter_judge):
    from alignkit.rollout import make_engine

    model, tokenizer = letter_judge
    app = create_app(make_engine(model, tokenizer, max_batch=8), tokenizer, model=model, model_name="judge", context_length=2048)
    with BackgroundServer(app) as url:
        yield url


def test_local_letter_probs_equal_a_direct_softmax(letter_judge):
    import torch

    model, tokenizer = letter_judge
    got = LocalChat(model, tokenizer).letter_probs(JUDGE_CONVERSATIONS)
    letter_ids = {"A": [49, 330], "B": [50, 389], "C": [51, 340]}  # "A"/" A", ... in the SmolLM2 vocabulary
    assert letter_ids == {x: tokenizer.convert_tokens_to_ids([x, "Ġ" + x]) for x in "ABC"}
    lengths = set()
    for conversation, probs in zip(JUDGE_CONVERSATIONS, got):
        ids = template_ids(tokenizer, conversation)
        lengths.add(len(ids))
        with torch.no_grad():
            # one row, no padding (the padded batch differs by fp32 round-off, ~1e-6)
            softmax = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
        assert probs == {x: pytest.approx(float(softmax[i].sum()), abs=1e-5) for x, i in letter_ids.items()}
    assert len(lengths) > 1  # rows were padded
    # The model is one that answers with letters, not all with the same one: the comparison means something.
    masses = [sum(p.values()) for p in got]
    assert min(masses) > 0.1 and sum(masses) / len(masses) > 0.5 and {max(p, key=p.get) for p in got} == {"A", "B", "C"}



def test_local_letter_probs_with_absolute_positions(tokenizer):
    """A model with learned absolute positions (GPT-2): left padding must not shift them (RoPE models
    cannot tell, since attention sees only relative positions)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=1024,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    conversations = JUDGE_CONVERSATIONS[:5]
    got = LocalChat(model, tokenizer).letter_probs(conversations)
    for conversation, probs in zip(conversations, got):
        ids = template_ids(tokenizer, conversation)
        with torch.no_grad():
            softmax = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
        # a random model: ~4e-5 per letter, so compare relative to that
        assert probs == {x: pytest.approx(float(softmax[tokenizer.convert_tokens_to_ids([x, "Ġ" + x])].sum()), rel=1e-4)
                         for x in "ABC"}
def test_endpoint_letter_probs_equal_local_ones(letter_judge, served_letter_judge, tmp_path):
    from alignkit.judges.llm import LLMJudge

    local = LocalChat(*letter_judge)
    endpoint = OpenAIChat(served_letter_judge, "judge", api_key_env=None, cache_dir=tmp_path / "cache", concurrency=4)
    remote = endpoint.letter_probs(JUDGE_CONVERSATIONS)
    expected = local.letter_probs(JUDGE_CONVERSATIONS)
    assert endpoint.calls == len(JUDGE_CONVERSATIONS)
    for r, e in zip(remote, expected):
        assert r == {x: pytest.approx(e[x], abs=1e-4) for x in "ABC"}
    # and so the same verdicts, whichever backend the judge uses
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    a, b = [f"answer {i}" for i in range(4)], [f"a reply of {i} words" for i in range(4)]
    assert LLMJudge(endpoint).judge(prompts, a, b) == pytest.approx(LLMJudge(local).judge(prompts, a, b), abs=1e-4)
    again = OpenAIChat(served_letter_judge, "judge", api_key_env=None, cache_dir=tmp_path / "cache")
    assert again.letter_probs(JUDGE_CONVERSATIONS) == remote and again.calls == 0  # cached
    again.chat(JUDGE_CONVERSATIONS[:1], max_tokens=1, temperature=0.0)
    assert again.calls == 1  # a reply is another request than its letter probabilities


def test_letter_sums_strip_token_texts():
    from alignkit.judges.chat import letter_sums

    top = [[" A", math.log(0.5)], ["A", math.log(0.1)], ["\nB", math.log(0.2)], ["C.", math.log(0.1)], ["a", math.log(0.05)]]
    assert letter_sums(top, "ABC") == {"A": pytest.approx(0.6), "B": pytest.approx(0.2), "C": 0.0}
