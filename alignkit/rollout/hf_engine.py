"""The fallback engine: Hugging Face ``generate`` for any causal LM (architectures the static-cache
decoder does not implement, 4-bit bases), with the same ``Rollouts`` out.

It samples from the model itself (``load_weights`` is a no-op). Log-probs come from the raw
logits ``generate`` returns; rows are cut at EOS or the first stop string afterwards.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from alignkit.rollout.engine import Prompt, StopStrings, check_options, encode_prompt, finish_reason, stop_token_ids
from alignkit.rollout.rollouts import Rollouts


class HFEngine:
    def __init__(self, model, tokenizer, *, max_batch: int = 16, dtype=None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch

    def load_weights(self, model) -> None:
        self.model = model

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

        from alignkit.models.sharding import is_sharded

        check_options(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        model, tokenizer = self.model, self.tokenizer
        if is_sharded(model):
            # generate() would run the sharded model with every process decoding a different
            # number of steps, each step a collective: they would wait on each other forever.
            raise ValueError("rollout_backend=hf samples from the training model itself, which --fsdp shards across "
                             "processes; use an engine with its own copy of the weights: static (Llama-family "
                             "models on CPU) or vllm (CUDA)")
        encoded = [encode_prompt(tokenizer, p) for p in prompts]
        stop_ids = stop_token_ids(model, tokenizer)
        stops = StopStrings(tokenizer, stop)
        options = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop_ids),
                       num_return_sequences=n, output_logits=True, return_dict_in_generate=True, use_cache=True)
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
        else:  # explicit, so a generation_config with sampling defaults cannot override greedy
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stops.stop:
            options.update(stop_strings=stops.stop, tokenizer=tokenizer)

        device = next(model.parameters()).device
        completions, logprobs, reasons = [], [], []
        per_batch = max(1, self.max_batch // n)
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), tqdm(
                total=len(encoded) * n, desc="rollout", unit="sample", disable=not progress
            ) as bar:
                torch.manual_seed(seed)
                for first in range(0, len(encoded), per_batch):
                    chunk = encoded[first : first + per_batch]
                    saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
                    try:
                        batch = tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt").to(device)
                    finally:
                        tokenizer.padding_side = saved_side
                    out = model.generate(**batch, **options)
                    new = out.sequences[:, batch["input_ids"].shape[1] :]  # (B·n, T_new)
                    scale = temperature if temperature > 0 else 1.0
                    token_logps = torch.stack([torch.log_softmax(l.float() / scale, -1) for l in out.logits], 1)  # (B·n, T_new, V)
                    token_logps = token_logps.gather(-1, new[..., None]).squeeze(-1)
                    for tokens, lps in zip(new.tolist(), token_logps.tolist()):
                        kept, reason = _cut(tokens, stop_ids, stops, max_new_tokens)
                        completions.append(kept)
                        logprobs.append(lps[: len(kept)])
                        reasons.append(reason)
                    bar.update(new.shape[0])
        finally:
            model.train(was_training)
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        texts = [stops.cut(t) if r == "stop" else t for t, r in zip(texts, reasons)]
        rows = len(completions)
        return Rollouts(
            prompt_ids=[encoded[r // n] for r in range(rows)], completion_ids=completions, logprobs=logprobs,
            finish_reasons=reasons, texts=texts, prompt_index=[r // n for r in range(rows)], n=n,
            timings={"generate": time.perf_counter() - start},
        )


def _cut(tokens: list[int], stop_ids: set[int], stops: StopStrings, max_new_tokens: int):
    """The row as the static engine would have produced it: up to its first finishing token."""
    kept: list[int] = []
    for token in tokens:
        kept.append(token)
        reason = finish_reason(token, kept, stop_ids, stops, max_new_tokens)
        if reason is not None:
            return kept, reason
    return kept, "length"
