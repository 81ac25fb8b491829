"""A bounded load test of ``alignkit serve`` through the official openai client.

    .venv/bin/python scripts/load_test_serve.py                       # starts the bundled model itself
    .venv/bin/python scripts/load_test_serve.py --url http://127.0.0.1:8000/v1 --model NAME

Sends --requests chat completions, --concurrency at a time (asyncio + AsyncOpenAI), and reports
latency percentiles, completion tokens per second over the whole run, and the error count. Exits
non-zero when any request failed. The machine's load average is printed before and after: on a
shared machine other processes take CPU from the server, and the numbers mean little without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time

TOPICS = ["the sea", "bread", "a bicycle", "the moon", "rain", "a library", "tea", "mountains", "a violin", "snow",
          "a garden", "trains", "the desert", "bees", "a lighthouse", "chess"]
ASKS = ["Describe {} in two sentences.", "Give me one fact about {}.", "Write a short poem about {}.", "Why do people like {}?"]


def prompts(count: int) -> list[list[dict]]:
    return [[{"role": "user", "content": ASKS[i % len(ASKS)].format(TOPICS[i % len(TOPICS)])}] for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, model: str, key: str, *, requests: int, concurrency: int, max_tokens: int, temperature: float) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    latencies, tokens, errors = [], 0, []

    async def one(messages):
        nonlocal tokens
        async with gate:
            start = time.perf_counter()
            try:
                reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                             temperature=temperature)
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - start)
            tokens += reply.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(one(m) for m in prompts(requests)))
    wall = time.perf_counter() - start
    await client.close()
    return {
        "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens, "temperature": temperature,
        "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 2),
        "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "requests_per_s": round(requests / wall, 2),
        "latency_s": {f"p{q}": round(percentile(latencies, q), 2) for q in (50, 90, 99)} | {"max": round(max(latencies), 2)}
        if latencies else None,
    }


def server_stats(url: str) -> dict | None:
    """The server's own batching counters (GET /health): requests per engine call, busy time."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as response:
            return json.loads(response.read()).get("batching")
    except OSError:
        return None


def start_server(model: str, key_env: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "alignkit.cli", "serve", model, "--port", "0", "--api-key-env", key_env,
                                "--no-access-log"], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.fullmatch(r"serving .* at (http://\S+/v1)\n", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start (its first line: {line!r})")
    return process, match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="An already running server; by default one is started for --model.")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--api-key-env", default="ALIGNKIT_LOAD_TEST_KEY", help="Variable holding the key (set for you when the script starts the server).")
    args = parser.parse_args()

    process = None
    if args.url is None:
        os.environ.setdefault(args.api_key_env, os.urandom(16).hex())
        process, url = start_server(args.model, args.api_key_env)
    else:
        url = args.url
    try:
        load_before = os.getloadavg()
        result = asyncio.run(load(url, args.model, os.environ.get(args.api_key_env, "none"), requests=args.requests,
                                  concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature))
        result["server_batching"] = server_stats(url)
        result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        result["cpus"] = os.cpu_count()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    print(json.dumps(result, indent=2))
    if result["errors"]:
        raise SystemExit(f"{result['errors']} of {args.requests} requests failed")


if __name__ == "__main__":
    main()
