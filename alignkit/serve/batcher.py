"""Concurrent requests → one ``engine.generate`` call per batch.

    request ─► queue ─► wait ``window_s`` for others to arrive (and take whatever queued up while
    the engine was busy) ─► group by sampling options ─► one engine.generate per group, in a worker
    thread ─► each request's rows back to its future

The engine samples every prompt of a call with the same n / temperature / top_p / stop / seed, so
requests are grouped by those. ``max_tokens`` is not part of the key: the group decodes up to its
largest value and each request's rows are cut to its own. That is exact: a row that ran past a
request's limit had met no EOS or stop string before it, so the cut row is what a separate call
would have returned, with finish reason "length". Inside a call the engine batches continuously
(a finished row's slot takes the next waiting row), so one call for many requests is the point.

A request with an explicit ``seed`` runs in a call of its own, so that the same request with the
same seed gets the same answer whatever else was in flight (as far as the engine's arithmetic is
batch-independent). Without one, each call draws a fresh seed: identical sampled requests differ.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int | None


@dataclass
class Choice:
    text: str
    finish_reason: str  # OpenAI's: "stop" or "length"
    token_ids: list[int]

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class _Job:
    prompt_ids: list[int]
    sampling: Sampling
    future: asyncio.Future

    def key(self):
        s = self.sampling
        alone = id(self) if s.seed is not None else None
        return (s.n, s.temperature, s.top_p, s.stop, alone)


@dataclass
class Stats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


@dataclass
class Batcher:
    engine: object
    tokenizer: object
    window_s: float = 0.005
    max_requests: int = 64
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self):
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        # One worker: the engine is not thread-safe, and torch already uses every core per call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alignkit-engine")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, prompt_ids: list[int], sampling: Sampling) -> list[Choice]:
        """The request's n choices, once the batch it joined has been generated."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        job = _Job(prompt_ids, sampling, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def call(self, fn):
        """``fn()`` on the engine's worker thread: other model work (scoring a completion) queues
        behind generation instead of competing with it for the cores."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            await asyncio.sleep(self.window_s)  # let requests sent at about the same time join
            while len(jobs) < self.max_requests and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            groups: dict = {}
            for job in jobs:
                groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                await self._run(group)

    async def _run(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.cancelled()]  # the client went away
        if not jobs:
            return
        first = jobs[0].sampling
        seed = first.seed if first.seed is not None else random.getrandbits(31)
        max_tokens = max(j.sampling.max_tokens for j in jobs)
        start = time.perf_counter()
        try:
            rollouts = await asyncio.get_running_loop().run_in_executor(self._executor, lambda: self.engine.generate(
                [j.prompt_ids for j in jobs], n=first.n, max_new_tokens=max_tokens, temperature=first.temperature,
                top_p=first.top_p, stop=list(first.stop) or None, seed=seed,
            ))
        except Exception as exc:  # every waiting request learns of it; the loop goes on
            log.exception("generation failed for a batch of %d requests", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.busy_s += time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        n = first.n
        for i, job in enumerate(jobs):
            choices = [self._choice(rollouts, i * n + k, job.sampling.max_tokens) for k in range(n)]
            self.stats.completion_tokens += sum(c.tokens for c in choices)
            if not job.future.done():
                job.future.set_result(choices)

    def _choice(self, rollouts, row: int, max_tokens: int) -> Choice:
        ids, text, reason = rollouts.completion_ids[row], rollouts.texts[row], rollouts.finish_reasons[row]
        if len(ids) > max_tokens:  # decoded further for another request of the batch (see module doc)
            ids = ids[:max_tokens]
            text, reason = self.tokenizer.decode(ids, skip_special_tokens=True), "length"
        return Choice(text=text, finish_reason="length" if reason == "length" else "stop", token_ids=list(ids))
