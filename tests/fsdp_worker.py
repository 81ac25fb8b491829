"""Run by test_fsdp under torchrun: each run of a JSON list through ``run_method`` (what
``alignkit <method> --fsdp ...`` calls), one after the other in the same processes, so the
launcher's start-up is paid once; and ``{"check": "engines", "output": FILE}``, what the rollout
engines read from a sharded model (and whether a reference copy is sharded), written to FILE by
rank 0; and ``{"check": "nan", "output_dir": DIR}``, a sharded run with a NaN loss on one process."""

import json
import logging
import sys
from pathlib import Path

import torch

from alignkit.train.registry import run_method


def check_engines(output: str) -> None:
    """The weights an engine syncs from a sharded LoRA model (``merged_state_dict`` inside
    ``full_weights``, what vLLM's ``load_weights`` reads) equal the unsharded model's, the
    generate-based engine refuses a sharded model instead of hanging, and a frozen reference copy
    is sharded with the policy."""
    import torch.distributed as dist

    from alignkit.models import tiny_model
    from alignkit.models.sharding import full_weights, shard
    from alignkit.rollout.hf_engine import HFEngine
    from alignkit.rollout.weights import merged_state_dict
    from alignkit.train.config import RunConfig
    from alignkit.train.lora import apply_lora

    model, tokenizer = tiny_model(seed=0)
    model = apply_lora(model, RunConfig(lora_r=4))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero, so the merge adds something
            p.data.normal_()
    expected = {k: v.clone() for k, v in merged_state_dict(model).items()}
    shard(model)
    with full_weights(model):
        synced = merged_state_dict(model)
        result = {"same_names": sorted(synced) == sorted(expected),
                  "max_diff": max(float((synced[k] - expected[k]).abs().max()) for k in expected)}
    try:
        HFEngine(model, tokenizer).generate([[1, 2, 3]], max_new_tokens=2)
        result["hf_engine"] = "generated"
    except ValueError as exc:
        result["hf_engine"] = str(exc)
    result["reference_sharded"] = reference_copy_is_sharded()
    if dist.get_rank() == 0:
        Path(output).write_text(json.dumps(result))


def reference_copy_is_sharded() -> bool:
    """Whether the loop shards DPO's frozen reference copy along with the policy."""
    from alignkit.models import tiny_model
    from alignkit.models.sharding import is_sharded
    from alignkit.train.dpo import DPOConfig, DPOMethod
    from alignkit.train.loop import Topology, shard_for_run

    model, tokenizer = tiny_model(seed=0)
    method = DPOMethod(DPOConfig(reference="copy", fsdp=True), model, tokenizer, [])
    shard_for_run(method, method.cfg, Topology.current())
    return is_sharded(method.model) and is_sharded(method.reference.frozen)


def nan_on_one_process(output_dir: str) -> None:
    """DPO whose loss turns NaN on process 1 from its second step on, sharded, skipping faults: every
    process skips those steps together instead of waiting on each other's collectives."""
    from alignkit.models import tiny_model
    from alignkit.train.dpo import DPOConfig, PairItem
    from alignkit.train.loop import fit
    from tests.dist_worker import NaNOnOneProcess
    from tests.pairs import make_pairs

    model, tokenizer = tiny_model(seed=0)
    cfg = DPOConfig(output_dir=output_dir, batch_size=4, grad_accum=2, max_steps=3, lr=1e-3, warmup_ratio=0.0,
                    reference="precompute", seed=5, fsdp=True, on_fault="skip")
    method = NaNOnOneProcess(cfg, model, tokenizer, [PairItem(p) for p in make_pairs(8)])
    method.poison_rank = 1
    fit(method, cfg)


def main(spec: str) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # the test reads "resumed from"
    for run in json.loads(Path(spec).read_text()):
        if run.get("check") == "engines":
            check_engines(run["output"])
        elif run.get("check") == "nan":
            nan_on_one_process(run["output_dir"])
        else:
            run_method(run["method"], **run["fields"])


if __name__ == "__main__":
    main(sys.argv[1])
