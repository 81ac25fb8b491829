"""Where a decode step of the CPU rollout engine spends its time (torch profiler, bundled model).

    .venv/bin/python bench/profile_rollout.py [--batch 16] [--dtype auto|fp32|bf16]

Prefills ``batch`` prompts, warms up, then profiles 16 steps of logits → sample → decode and
prints the op table and the milliseconds per step of each phase.
"""

from __future__ import annotations

import argparse
import time

import torch

from alignkit.models.loading import load_policy, load_tokenizer
from alignkit.rollout.decoder import Decoder
from alignkit.rollout.precision import decode_dtype
from alignkit.rollout.sampling import sample_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args()
    tokenizer, model = load_tokenizer("smollm2-135m-instruct"), load_policy("smollm2-135m-instruct").eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(args.dtype) or decode_dtype(torch.device("cpu"), model.config.hidden_size)
    decoder = Decoder(model, dtype=dtype)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Tell me about topic number {i}."}],
                                             add_generation_prompt=True, return_dict=True)["input_ids"] for i in range(args.batch)]
    generator = torch.Generator().manual_seed(0)
    decoder.allocate(args.batch, max(map(len, prompts)) + 64)
    hidden = decoder.prefill(prompts, list(range(args.batch)))
    positions = torch.tensor([len(p) for p in prompts])

    def step(phases=None):
        nonlocal hidden, positions
        marks = [time.perf_counter()]
        logits = decoder.logits(hidden)
        marks.append(time.perf_counter())
        tokens, _ = sample_tokens(logits, temperature=1.0, generator=generator)
        marks.append(time.perf_counter())
        hidden = decoder.decode(tokens, positions)
        marks.append(time.perf_counter())
        positions = positions + 1
        if phases is not None:
            for name, a, b in zip(("lm head", "sample", "decode"), marks, marks[1:]):
                phases[name] = phases.get(name, 0.0) + b - a

    for _ in range(4):
        step()
    phases: dict[str, float] = {}
    for _ in range(16):
        step(phases)
    print(f"dtype {dtype}, packed weights {decoder.packed}, batch {args.batch}: "
          + ", ".join(f"{k} {v / 16 * 1000:.1f} ms" for k, v in phases.items())
          + f"; {args.batch * 16 / sum(phases.values()):.0f} tok/s")
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(16):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
