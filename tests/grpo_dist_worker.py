"""Run by test_grpo_distributed under torchrun: a few GRPO steps on 2 processes, then each process
writes its final weights' checksum and rank 0 the metrics. Round 1 gives rank 0 a zero-signal
group (dropped: an empty micro-batch) and rank 1 a signal group."""

import json
import os
import sys

import torch

from alignkit.models import tiny_model
from alignkit.train.grpo import GRPOConfig, GRPOMethod
from alignkit.train.loop import fit
from tests.test_grpo import _prompts


def main(output_dir: str) -> None:
    model, tokenizer = tiny_model(seed=0)
    cfg = GRPOConfig(output_dir=output_dir, reward=["tests.test_grpo:patterned"], num_generations=4, batch_size=8,
                     max_new_tokens=5, lr=1e-2, warmup_ratio=0.0, seed=3, rollout_dtype="float32", max_steps=2)
    method = GRPOMethod(cfg, model, tokenizer, _prompts(tokenizer, ("flat", "signal")))
    fit(method, cfg)
    checksum = [float(p.detach().double().sum()) for p in model.parameters()]
    rank = int(os.environ.get("RANK", 0))
    json.dump({"checksum": checksum, "buffer_rows": len(method.rows)}, open(f"{output_dir}/rank{rank}.json", "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
