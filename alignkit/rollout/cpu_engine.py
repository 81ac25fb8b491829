"""The default engine off GPU: the lean decoder (``decoder.py``) under a continuous-batching loop.

    queue of (prompt, samples left) ──► free slots ──► prefill each prompt once, copy its cache to
    its other samples' slots ──► every step: logits → sample (token, log-prob) for each live row
    ──► rows that ended (EOS, stop string, length) retire; the last live row moves into the hole
    so live rows stay in slots 0..B−1 ──► refill the free slots from the queue ──► decode step

So the batch stays full while work remains, no row waits for the longest one, a prompt with n
samples is run through the model once, and the log-probs come from the sampling step itself, not
from a second forward pass.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Sequence

import torch

from alignkit.rollout.decoder import Decoder
from alignkit.rollout.engine import Prompt, StopStrings, check_options, encode_prompt, finish_reason, stop_token_ids
from alignkit.rollout.precision import decode_dtype
from alignkit.rollout.rollouts import Rollouts
from alignkit.rollout.sampling import sample_tokens


def plain_model(model):
    """The transformers model under DDP / PEFT wrappers (LoRA layers stay inside it)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class StaticCacheEngine:
    """Samples from its own copy of the weights (fused, in ``dtype``); ``load_weights`` refreshes it.

    ``max_batch``: live sequences at once (the KV cache holds this many). ``dtype``: "auto" picks
    bf16 when this machine's bf16 matmuls measure faster than fp32 (then log-probs differ from an
    fp32 trainer's by bf16 round-off: trainers recompute π_old or correct for it), else fp32.
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 64, dtype: torch.dtype | str = "auto"):
        base = plain_model(model)
        if dtype == "auto":
            dtype = decode_dtype(next(base.parameters()).device, base.config.hidden_size)
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.stop_ids = stop_token_ids(base, tokenizer)
        self.decoder = Decoder(base, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.dtype

    def load_weights(self, model) -> None:
        from alignkit.models.sharding import full_weights

        with full_weights(model):  # sharded (--fsdp): gathered whole for the copy, then freed
            self.decoder.load_weights(plain_model(model))

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Rollouts:
        from tqdm.auto import tqdm

        check_options(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ValueError("a prompt encoded to zero tokens")
        rows = len(encoded) * n
        completions: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        reasons: list[str | None] = [None] * rows
        if rows == 0:
            return Rollouts([], [], [], [], [], [], n=n)
        stops = StopStrings(self.tokenizer, stop)
        generator = torch.Generator(device=self.decoder.device).manual_seed(seed)
        dec = self.decoder
        slots = min(self.max_batch, rows)
        dec.allocate(slots, max(len(ids) for ids in encoded) + max_new_tokens)

        queue = deque((i, n) for i in range(len(encoded)))  # (prompt index, samples not yet started)
        next_sample = [0] * len(encoded)
        live: list[int] = []  # the output row held by each slot 0..B−1
        positions: list[int] = []  # the cache column the slot's next token goes to
        hidden = torch.empty(0, dec.embed.shape[1], dtype=dec.dtype, device=dec.device)
        timings = {"prefill": 0.0, "decode": 0.0, "sample": 0.0}
        bar = tqdm(total=rows, desc="rollout", unit="sample", disable=not progress)

        def refill() -> torch.Tensor:
            """Start queued samples in the free slots; returns their next-token hidden states."""
            free = slots - len(live)
            batch_prompts, batch_slots, copies = [], [], []
            while free and queue:
                prompt, left = queue.popleft()
                take = min(left, free)
                if left > take:
                    queue.appendleft((prompt, left - take))
                first = len(live)
                for _ in range(take):
                    live.append(prompt * n + next_sample[prompt])
                    positions.append(len(encoded[prompt]))
                    next_sample[prompt] += 1
                batch_prompts.append(encoded[prompt])
                batch_slots.append(first)
                copies.append((first, range(first + 1, first + take)))
                free -= take
            if not batch_prompts:
                return hidden[:0]
            start = time.perf_counter()
            last_hidden = dec.prefill(batch_prompts, batch_slots)  # (P, H)
            for source, targets in copies:
                dec.copy_slot(source, targets)
            timings["prefill"] += time.perf_counter() - start
            counts = torch.tensor([1 + len(t) for _, t in copies], device=dec.device)
            return last_hidden.repeat_interleave(counts, dim=0)

        hidden = refill()
        while live:
            start = time.perf_counter()
            tokens, token_logps = sample_tokens(dec.logits(hidden), temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            timings["sample"] += time.perf_counter() - start
            finished = []
            for slot, (row, token, logp) in enumerate(zip(live, tokens.tolist(), token_logps.tolist())):
                completions[row].append(token)
                logprobs[row].append(logp)
                reasons[row] = finish_reason(token, completions[row], self.stop_ids, stops, max_new_tokens)
                if reasons[row] is not None:
                    finished.append(slot)
            for slot in reversed(finished):  # fill each hole with the last live row
                last = len(live) - 1
                if slot != last:
                    dec.move_slot(last, slot)
                    live[slot], positions[slot] = live[last], positions[last]
                    tokens[slot] = tokens[last]
                live.pop()
                positions.pop()
            bar.update(len(finished))
            continuing = len(live)
            tokens = tokens[:continuing]
            fresh = refill()
            if continuing:
                start = time.perf_counter()
                step_positions = torch.tensor(positions[:continuing], device=dec.device)
                hidden = torch.cat([dec.decode(tokens, step_positions), fresh])
                for slot in range(continuing):
                    positions[slot] += 1
                timings["decode"] += time.perf_counter() - start
            else:
                hidden = fresh
        bar.close()

        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        texts = [stops.cut(t) if r == "stop" else t for t, r in zip(texts, reasons)]
        return Rollouts(
            prompt_ids=[encoded[r // n] for r in range(rows)],
            completion_ids=completions,
            logprobs=logprobs,
            finish_reasons=reasons,
            texts=texts,
            prompt_index=[r // n for r in range(rows)],
            n=n,
            timings=timings,
        )
