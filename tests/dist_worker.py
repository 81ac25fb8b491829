"""Run by test_distributed under torchrun: a few DPO steps, the summary written by rank 0."""

import json
import sys

from alignkit.models import tiny_model
from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
from alignkit.train.loop import fit
from tests.pairs import make_pairs


def main(output_dir: str, grad_accum: int) -> None:
    model, tokenizer = tiny_model(seed=0)
    cfg = DPOConfig(output_dir=output_dir, batch_size=4, grad_accum=grad_accum, max_steps=3, lr=1e-3,
                    warmup_ratio=0.0, reference="precompute", seed=5)
    summary = fit(DPOMethod(cfg, model, tokenizer, [PairItem(p) for p in make_pairs(8)]), cfg)
    json.dump(summary["train"], open(f"{output_dir}/train.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
