"""DPO training speed: alignkit vs TRL's DPOTrainer on the same model, data and hyper-parameters.

Each (library, case) runs in its own subprocess (so peak RSS is its own), alternating libraries,
each after a warm-up forward/backward. Timed: everything after the model is loaded — data
preparation, reference log-probs (precomputed or per step), one epoch of optimizer steps and
saving the trained model (weights or adapter).

    .venv/bin/python bench/dpo_vs_trl.py            # 48 pairs, batch 4, four cases
    .venv/bin/python bench/dpo_vs_trl.py --quick    # 16 pairs, fewer cases, under 10 minutes

The last line is machine-readable: RESULT full_default=... full_best=... lora_default=... lora_best=... mfu=...
(ratios alignkit/TRL in pairs/s; mfu = alignkit's useful FLOPs/s over the fp32 matmul peak, the lowest
over the cases run). This machine is shared and its speed drifts by 10-20 % within minutes, so
each alignkit run measures the matmul peak right before and right after its timed region and its
MFU is taken against the higher of the two.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "alignkit/datasets/hhh/helpful.train.jsonl"
MODEL = "smollm2-135m-instruct"
CASES = {  # name -> (lora, TRL precompute_ref_log_probs)
    "full_default": (False, False),
    "full_best": (False, True),
    "lora_default": (True, False),
    "lora_best": (True, True),
}


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _rows(n_pairs: int) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n_pairs]]
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")


def _warm_up(model) -> None:
    import torch

    ids = torch.randint(3, 1000, (2, 64))
    model(input_ids=ids).logits.sum().backward()
    model.zero_grad(set_to_none=True)


def run_trl(case: str, n_pairs: int, batch: int, out: Path) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignkit.models import load_policy, load_tokenizer

    lora, precompute = CASES[case]
    tokenizer, model = load_tokenizer(MODEL), load_policy(MODEL)
    _warm_up(model)
    start = time.perf_counter()
    args = DPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=5e-6,
                     logging_steps=1, beta=0.1, max_length=512, report_to=[], use_cpu=True, save_strategy="no", seed=0,
                     precompute_ref_log_probs=precompute, disable_dropout=True, lr_scheduler_type="linear", warmup_steps=int(0.1 * (n_pairs // batch)),
                     # fp32 like alignkit on CPU: TRL 1.16 defaults to bf16 autocast and gradient checkpointing,
                     # which on a CPU without bf16 matmul units costs minutes per step and is not a fair peer.
                     bf16=False, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(_rows(n_pairs)), processing_class=tokenizer,
                         peft_config=_lora() if lora else None)
    trainer.train()
    trainer.save_model(str(out / "trl" / "model"))  # alignkit's fit saves too: the same work on both sides
    elapsed = time.perf_counter() - start
    first = next(r for r in trainer.state.log_history if "loss" in r)
    return {"seconds": elapsed, "first_loss": first["loss"], "first_logps_chosen": first.get("logps/chosen")}


def run_alignkit(case: str, n_pairs: int, batch: int, out: Path) -> dict:
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
    from alignkit.train.loop import fit
    from alignkit.train.setup import load_pairs, prepare_model

    lora, _ = CASES[case]
    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n_pairs)))
    cfg = DPOConfig(model=MODEL, data=str(out / "data.jsonl"), output_dir=str(out / "ak"), batch_size=batch, epochs=1,
                    lr=5e-6, beta=0.1, max_length=512, lora_r=16 if lora else None, seed=0, warmup_ratio=0.1)
    model, tokenizer = prepare_model(cfg)
    _warm_up(model)
    peak_before = matmul_peak_gflops()
    start = time.perf_counter()
    method = DPOMethod(cfg, model, tokenizer, [PairItem(p) for p in load_pairs(cfg.data, tokenizer, cfg)])
    tokens = sum(method.length(it) for it in method.train_items)
    fit(method, cfg)
    elapsed = time.perf_counter() - start
    peak = max(peak_before, matmul_peak_gflops())
    first = json.loads((out / "ak" / "metrics.jsonl").read_text().splitlines()[0])
    return {"seconds": elapsed, "first_loss": first["loss"], "first_logps_chosen": first["logps/chosen"], "tokens": tokens,
            "peak_gflops": peak}


def child(lib: str, case: str, n_pairs: int, batch: int, out: str) -> None:
    import torch

    torch.manual_seed(0)
    result = (run_trl if lib == "trl" else run_alignkit)(case, n_pairs, batch, Path(out))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("CHILD " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 pairs and the two LoRA cases only")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--child", nargs=3, metavar=("LIB", "CASE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_pairs = args.pairs or (16 if args.quick else 48)
    if args.child:
        return child(args.child[0], args.child[1], n_pairs, args.batch, args.child[2])

    import tempfile

    from alignkit.models import load_policy

    model = load_policy(MODEL)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    peak = matmul_peak_gflops()
    print(f"model {MODEL}: {n_params / 1e6:.1f}M params; fp32 matmul peak at start {peak:.1f} GFLOP/s")
    cases = ["lora_default", "lora_best"] if args.quick else list(CASES)
    ratios, mfus = {}, []
    for case in cases:
        results = {}
        for lib in ("trl", "alignkit"):  # alternate: each case runs TRL then alignkit
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--child", lib, case, tmp, "--pairs", str(n_pairs), "--batch", str(args.batch)]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                line = next((l for l in proc.stdout.splitlines() if l.startswith("CHILD ")), None)
                if line is None:
                    sys.exit(f"{lib} {case} failed:\n{proc.stderr[-3000:]}")
                results[lib] = json.loads(line[6:])
        ak, trl = results["alignkit"], results["trl"]
        tokens = ak["tokens"]  # packed tokens per epoch: prompt once + both responses
        lora, _ = CASES[case]
        # Useful FLOPs: 6·N per trained token (forward + backward), 2·N per reference token (precomputed once).
        useful = (6 + 2) * n_params * tokens
        mfu = useful / ak["seconds"] / 1e9 / ak["peak_gflops"]
        mfus.append(mfu)
        ratios[case] = (n_pairs / ak["seconds"]) / (n_pairs / trl["seconds"])
        agree = abs(ak["first_loss"] - trl["first_loss"]) <= 1e-3
        print(f"{case:13s} pairs/s alignkit {n_pairs / ak['seconds']:.3f} vs TRL {n_pairs / trl['seconds']:.3f} "
              f"(x{ratios[case]:.2f}); tokens/s alignkit {tokens / ak['seconds']:.0f}; peak RSS alignkit "
              f"{ak['peak_rss_mb']:.0f} MB vs TRL {trl['peak_rss_mb']:.0f} MB; useful GFLOP/s {useful / ak['seconds'] / 1e9:.1f} "
              f"({mfu:.0%} of the {ak['peak_gflops']:.0f} GFLOP/s peak around it); first-step loss {ak['first_loss']:.4f} vs {trl['first_loss']:.4f} "
              f"{'agree' if agree else 'DIFFER'}")
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()) + f" mfu={min(mfus):.2f}")


if __name__ == "__main__":
    main()
