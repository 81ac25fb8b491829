"""Where one alignkit DPO step spends its time: forward, backward, optimizer, and the top operators.

    .venv/bin/python bench/profile_dpo_step.py            # full fine-tune, 4 pairs per step
    .venv/bin/python bench/profile_dpo_step.py --lora
    .venv/bin/python bench/profile_dpo_step.py --shapes   # operators by input shape too

Runs the same pairs as ``bench/dpo_vs_trl.py`` (reference log-probs precomputed, as alignkit does
by default), warms up with one step, then times ``--steps`` steps phase by phase and profiles
the last one with ``torch.profiler`` (CPU time by operator, self time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "alignkit/datasets/hhh/helpful.train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", action="store_true", help="also break operators down by input shape")
    args = parser.parse_args()

    from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
    from alignkit.train.loop import build_optimizer
    from alignkit.train.setup import load_pairs, prepare_model

    n_pairs = args.batch * (args.steps + 1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n_pairs]]
        data.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for r in rows))
        cfg = DPOConfig(model="smollm2-135m-instruct", data=str(data), output_dir=tmp, batch_size=args.batch,
                        max_length=512, lora_r=16 if args.lora else None)
        model, tokenizer = prepare_model(cfg)
        method = DPOMethod(cfg, model, tokenizer, [PairItem(p) for p in load_pairs(cfg.data, tokenizer, cfg)])
    optimizer, _ = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg, args.steps + 1)
    batches = [method.collate(method.train_items[i:i + args.batch]) for i in range(0, n_pairs, args.batch)]

    def step(batch, times=None):
        t0 = time.perf_counter()
        loss, _ = method.loss(batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if times is not None:
            times.append((t1 - t0, t2 - t1, t3 - t2))

    step(batches[0])  # warm-up
    times: list[tuple[float, float, float]] = []
    for batch in batches[1:-1]:
        step(batch, times)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        step(batches[-1], times)

    tokens = sum(b["input_ids"].numel() for b in batches[1:]) / len(times)
    fwd, bwd, opt = (sum(t[i] for t in times) / len(times) for i in range(3))
    total = fwd + bwd + opt
    print(f"{'LoRA r=16' if args.lora else 'full fine-tune'}, {args.batch} pairs/step, {tokens:.0f} packed tokens/step, "
          f"torch threads {torch.get_num_threads()}")
    for name, t in (("forward", fwd), ("backward", bwd), ("optimizer", opt)):
        print(f"  {name:9s} {t:6.2f} s  {t / total:5.1%}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if args.shapes:
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30,
                                                                 max_name_column_width=30, max_shapes_column_width=90))


if __name__ == "__main__":
    main()
