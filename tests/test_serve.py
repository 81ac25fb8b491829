"""alignkit serve against the official openai client on loopback: chat, streaming, n, seed, stop,
batching of concurrent requests, logprobs (against an independent teacher-forced forward),
OpenAI-shaped errors, the API key, and the CLI's ready line."""

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import openai
import pytest

MODEL = "tiny"
KEY = "test-key-not-a-secret"
HI = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def server():
    """(base_url, app, model) of a real uvicorn server on a thread, serving a tiny random model."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.models import load_tokenizer
    from alignkit.models.tiny import tiny_config
    from alignkit.rollout import make_engine
    from alignkit.serve import BackgroundServer, create_app

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    # Untied embeddings and a wide initialisation: the default tiny model greedily repeats one token,
    # which would hide stop strings and batching mix-ups.
    config = tiny_config(tokenizer)
    config.tie_word_embeddings, config.initializer_range = False, 0.2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # fp32: greedy answers must not depend on the batch they were decoded in (bf16 round-off could).
    engine = make_engine(model.eval(), tokenizer, max_batch=16, dtype=torch.float32)
    app = create_app(engine, tokenizer, model=model, model_name=MODEL, context_length=256, api_key=KEY, max_n=4, window_s=0.05)
    with BackgroundServer(app) as url:
        yield url, app, model


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=60)


def raw(url: str, path: str, body=None, *, key: str | None = KEY, method: str | None = None) -> tuple[int, dict]:
    """(status, JSON body) of one request, without the openai client (to send what it would not)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.removesuffix("/v1") + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_openai_error(body: dict, *, param=..., code=...):
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and body["error"]["type"]
    if param is not ...:
        assert body["error"]["param"] == param, body
    if code is not ...:
        assert body["error"]["code"] == code, body


def test_chat_completion_shape_and_usage(client):
    reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0)
    assert reply.object == "chat.completion" and reply.model == MODEL and reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert 1 <= reply.usage.completion_tokens <= 6
    assert choice.finish_reason == ("length" if reply.usage.completion_tokens == 6 else "stop")
    assert reply.usage.prompt_tokens > 5 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_n_choices_and_seed(client):
    ask = dict(model=MODEL, messages=HI, max_tokens=8, temperature=1.0, n=3)
    first = client.chat.completions.create(seed=7, **ask)
    again = client.chat.completions.create(seed=7, **ask)
    other = client.chat.completions.create(seed=8, **ask)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1  # n samples, not one sample n times
    assert texts == [c.message.content for c in again.choices]  # same seed, same answers
    assert texts != [c.message.content for c in other.choices]
    assert 3 <= first.usage.completion_tokens <= 3 * 8


def test_streaming_concatenates_to_the_plain_answer(client):
    ask = dict(model=MODEL, messages=HI, max_tokens=10, temperature=0, n=2)
    plain = client.chat.completions.create(**ask)
    pieces, finish, usage = {0: "", 1: ""}, {}, None
    roles = set()
    for event in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **ask):
        assert event.object == "chat.completion.chunk"
        if event.usage is not None:
            usage = event.usage
        for choice in event.choices:
            if choice.delta.role:
                roles.add(choice.delta.role)
            pieces[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert roles == {"assistant"}
    assert [pieces[0], pieces[1]] == [c.message.content for c in plain.choices]
    assert finish == {c.index: c.finish_reason for c in plain.choices}
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


def test_stop_string_cuts_the_answer(client):
    full = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    cut = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.index(stop)]


def test_concurrent_requests_share_batches_and_keep_their_own_answers(server, client):
    """8 requests at once: fewer engine calls than requests, and each greedy answer (with its own
    max_tokens) equals the answer it gets alone."""
    prompts = [[{"role": "user", "content": f"Question number {i}: why?"}] for i in range(8)]
    limits = [3, 9, 5, 9, 2, 7, 9, 4]
    alone = [client.chat.completions.create(model=MODEL, messages=p, max_tokens=m, temperature=0).choices[0]
             for p, m in zip(prompts, limits)]
    stats = server[1].state.batcher.stats
    batches_before = stats.batches
    together: list = [None] * 8
    go = threading.Barrier(8)

    def ask(i):
        go.wait()
        together[i] = client.chat.completions.create(model=MODEL, messages=prompts[i], max_tokens=limits[i], temperature=0).choices[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.batches - batches_before < 8
    assert stats.largest_batch > 1
    for a, b in zip(alone, together):
        assert (b.message.content, b.finish_reason) == (a.message.content, a.finish_reason)


@pytest.mark.parametrize("body, param, code", [
    ({"model": MODEL}, "messages", "missing_required_parameter"),
    ({"model": MODEL, "messages": []}, "messages", "invalid_value"),
    ({"model": MODEL, "messages": HI, "temperature": 5}, "temperature", "invalid_value"),
    ({"model": MODEL, "messages": HI, "top_p": 0}, "top_p", "invalid_value"),
    ({"model": MODEL, "messages": HI, "max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"model": MODEL, "messages": HI, "n": 5}, "n", "invalid_value"),  # above the server's max_n=4
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role", "invalid_value"),
    ({"model": MODEL, "messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    ({"model": MODEL, "messages": HI, "tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
    ({"model": MODEL, "messages": HI, "logprobs": True, "stream": True}, "logprobs", "unsupported_parameter"),
    ({"model": MODEL, "messages": HI, "top_logprobs": 2}, "top_logprobs", "invalid_value"),  # needs logprobs: true
    ({"model": MODEL, "messages": HI, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"model": MODEL, "messages": HI, "logprobs": True, "top_logprobs": -1}, "top_logprobs", "invalid_value"),
    ({"model": MODEL, "messages": HI, "max_tokens": 10_000}, "messages", "context_length_exceeded"),
    ([1, 2, 3], None, "invalid_request"),
])
def test_bad_requests_get_openai_shaped_400s(server, body, param, code):
    status, answer = raw(server[0], "/v1/chat/completions", body)
    assert status == 400
    assert_openai_error(answer, param=param, code=code)


def test_invalid_json_unknown_model_and_unknown_url(server, client):
    status, answer = raw(server[0], "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400
    assert_openai_error(answer, code="invalid_json")
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    status, answer = raw(server[0], "/v1/embeddings", {"input": "x"})
    assert status == 404
    assert_openai_error(answer, code="unknown_url")


def test_api_key(server):
    url = server[0]
    for wrong in (None, "wrong-key", KEY + "x"):
        status, answer = raw(url, "/v1/models", key=wrong, method="GET")
        assert status == 401
        assert_openai_error(answer, code="invalid_api_key")
        assert KEY not in json.dumps(answer)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(model=MODEL, messages=HI, max_tokens=2)
    models = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0).models.list()
    assert [m.id for m in models.data] == [MODEL]
    status, health = raw(url, "/health", key=None, method="GET")  # probes carry no key
    assert status == 200 and health["status"] == "ok"


def test_cli_prints_one_ready_line_and_serves(tiny_dir):
    env = {**os.environ, "ALIGNKIT_TEST_SERVE_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "alignkit.cli", "serve", tiny_dir, "--port", "0", "--api-key-env", "ALIGNKIT_TEST_SERVE_KEY",
         "--served-model-name", "tiny-cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"serving tiny-cli at (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        reply = openai.OpenAI(base_url=match.group(1), api_key=KEY, max_retries=0).chat.completions.create(
            model="tiny-cli", messages=HI, max_tokens=3)
        assert reply.choices[0].message.content
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert out == ""  # nothing after the ready line: logs go to stderr
    assert KEY not in err  # the key is never logged


def test_cli_refuses_an_empty_key_variable(tiny_dir):
    from click.testing import CliRunner

    from alignkit.cli import app

    result = CliRunner().invoke(app, ["serve", tiny_dir, "--api-key-env", "ALIGNKIT_TEST_UNSET_VARIABLE"],
                                env={"ALIGNKIT_TEST_UNSET_VARIABLE": ""})
    assert result.exit_code != 0
    assert "ALIGNKIT_TEST_UNSET_VARIABLE" in result.output and "not set or is empty" in result.output


def test_seeded_requests_answer_the_same_in_company(client):
    """A seeded sampled request gets the answer it gets alone, even when others arrive with it."""
    prompts = [[{"role": "user", "content": f"Say something, {i}."}] for i in range(4)]
    ask = dict(model=MODEL, max_tokens=6, temperature=1.0, seed=3)
    alone = [client.chat.completions.create(messages=p, **ask).choices[0].message.content for p in prompts]
    together: list = [None] * 4
    go = threading.Barrier(4)

    def run(i):
        go.wait()
        together[i] = client.chat.completions.create(messages=prompts[i], **ask).choices[0].message.content

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def reference_logprobs(model, prompt_ids: list[int], completion_ids: list[int]):
    """log_softmax of the model's logits over prompt + completion, one plain forward: (T, V)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0]
    return logits[len(prompt_ids) - 1 : -1].double().log_softmax(-1)


def token_ids_from_bytes(tokenizer, entries) -> list[int]:
    """Each entry's token id, found from its bytes through transformers' own byte-level table."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbol = bytes_to_unicode()
    ids = []
    for entry in entries:
        if entry.token in tokenizer.all_special_tokens:
            ids.append(tokenizer.convert_tokens_to_ids(entry.token))
        else:
            ids.append(tokenizer.convert_tokens_to_ids("".join(symbol[b] for b in entry.bytes)))
    return ids


@pytest.mark.parametrize("ask", [dict(temperature=0, n=1), dict(temperature=1.0, n=2, seed=5)])
def test_logprobs_equal_an_independent_teacher_forced_forward(server, client, tokenizer, ask):
    import math

    model = server[2]
    reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8, logprobs=True, top_logprobs=5, **ask)
    prompt_ids = list(tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    for choice in reply.choices:
        content = choice.logprobs.content
        ids = token_ids_from_bytes(tokenizer, content)
        special = set(tokenizer.all_special_ids)
        # the tokens are the completion: their bytes join into the text (special tokens, e.g. EOS, aside)
        assert b"".join(bytes(e.bytes) for e, i in zip(content, ids) if i not in special).decode() == choice.message.content
        assert [e.token for e in content] == [tokenizer.decode([i]) for i in ids]
        reference = reference_logprobs(model, prompt_ids, ids)
        for t, entry in enumerate(content):
            assert entry.logprob == pytest.approx(float(reference[t, ids[t]]), abs=1e-4)
            top = entry.top_logprobs
            assert len(top) == 5
            assert [x.logprob for x in top] == sorted((x.logprob for x in top), reverse=True)
            assert sum(math.exp(x.logprob) for x in top) <= 1.0 + 1e-6
            values, expected_ids = reference[t].topk(5)
            assert token_ids_from_bytes(tokenizer, top) == expected_ids.tolist()
            assert [x.logprob for x in top] == pytest.approx(values.tolist(), abs=1e-4)
            if ask["temperature"] == 0:  # greedy (fp32 engine): the chosen token is the most likely one
                assert entry.token == top[0].token
    assert sum(len(c.logprobs.content) for c in reply.choices) == reply.usage.completion_tokens


def test_logprobs_without_top_logprobs_and_not_asked(client):
    asked = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3, temperature=0, logprobs=True)
    (choice,) = asked.choices
    assert len(choice.logprobs.content) == asked.usage.completion_tokens
    assert all(e.top_logprobs == [] and e.logprob <= 0 for e in choice.logprobs.content)
    plain = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == choice.message.content


def test_token_bytes_of_part_of_a_character(tokenizer):
    """A byte-level token may be one byte of a UTF-8 character: decode shows U+FFFD, the bytes are exact."""
    from alignkit.serve.logprobs import token_bytes

    lead = tokenizer.convert_tokens_to_ids("â")  # the byte 0xE2 in GPT-2's table: starts "€" (E2 82 AC)
    assert tokenizer.decode([lead]) == "\ufffd" and token_bytes(tokenizer, lead) == [0xE2]
    text = "Price: 5€ – naïve 日本"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert b"".join(bytes(token_bytes(tokenizer, i)) for i in ids) == text.encode()
    eos = tokenizer.eos_token_id
    assert token_bytes(tokenizer, eos) == list(tokenizer.decode([eos]).encode())
