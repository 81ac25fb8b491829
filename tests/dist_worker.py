"""Run by test_distributed under torchrun: a few RPO steps, the summary written by rank 0.

With a third argument R, process R's loss turns NaN from its second step on; every process then
writes the error it raised to ``error-rank{N}.txt``.
"""

import json
import os
import sys

import torch.distributed as dist

from alignkit.models import tiny_model
from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
from alignkit.train.loop import NonFiniteLossError, fit
from tests.pairs import make_pairs


class NaNOnOneProcess(DPOMethod):
    poison_rank: int = -1
    calls: int = 0

    def loss(self, batch, totals=None):
        loss, metrics = super().loss(batch, totals)
        self.calls += 1
        if int(os.environ.get("RANK", 0)) == self.poison_rank and self.calls >= 2:
            loss = loss * float("nan")
        return loss, metrics


def main(output_dir: str, grad_accum: int, poison_rank: int = -1) -> None:
    model, tokenizer = tiny_model(seed=0)
    # RPO: DPO plus a token-mean NLL of the chosen responses, whose denominator (chosen tokens in the
    # global batch) the processes must agree on; the pairs have uneven lengths.
    cfg = DPOConfig(output_dir=output_dir, batch_size=4, grad_accum=grad_accum, max_steps=3, lr=1e-3,
                    warmup_ratio=0.0, reference="precompute", seed=5, loss="rpo")
    method = NaNOnOneProcess(cfg, model, tokenizer, [PairItem(p) for p in make_pairs(8)])
    method.poison_rank = poison_rank
    try:
        summary = fit(method, cfg)
    except NonFiniteLossError as e:
        open(f"{output_dir}/error-rank{os.environ.get('RANK', 0)}.txt", "w").write(str(e))
        dist.barrier()  # both files written before either process exits (torchrun then stops the rest)
        sys.exit(3)
    world = dist.get_world_size() if dist.is_initialized() else 1
    json.dump({**summary["train"], "world": world}, open(f"{output_dir}/train.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
