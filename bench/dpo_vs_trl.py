"""DPO training speed: alignkit vs TRL's DPOTrainer on the same model, data and hyper-parameters.

    .venv/bin/python bench/dpo_vs_trl.py            # 48 pairs, batch 4
    .venv/bin/python bench/dpo_vs_trl.py --quick    # 16 pairs: full fine-tune and LoRA cases, 8 runs

Each run is its own subprocess (so peak RSS is its own), after a warm-up forward/backward.
Timed: everything after the model is loaded — data preparation, reference log-probs
(precomputed or per step), one epoch of optimizer steps and saving the trained model. The runs,
in this order (alignkit between the two TRL settings it is compared with; the machine's speed
drifts by 10-20 % within minutes):

    full fine-tune:  TRL default, alignkit, TRL best, TRL best + alignkit's allocator, alignkit
    LoRA r=16:       TRL default, alignkit, TRL best  (+ the allocator pair without --quick)

"TRL best" is ``precompute_ref_log_probs=True``. "+ alignkit's allocator": TRL's process gets
glibc's ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` set to what ``alignkit/train/allocator.py``
sets for itself with mallopt, so that ratio is the speed-up of the library alone.

Equal work: before its timed region each side scores every pair, in file order, with its own
policy forward at the starting weights; per-pair chosen/rejected log-probs and response lengths
must agree (the same tokens, the same model), or the run stops with exit status 1.

On a shared machine a neighbour's load moves a run's speed more than any optimisation: before
each run the bench waits (``--wait-quiet``, up to 180 s) for other processes to leave the CPU
idle, and it reports for every run the share of the machine's CPU other processes used meanwhile
(``others_cpu`` in RESULT is the largest; above 0.1 the numbers are not to be trusted).

The last line is machine-readable:

    RESULT full_default=… full_best=… lora_default=… lora_best=… full_equal_alloc=… mfu=… peak_rss_gb=… others_cpu=…

Ratios are alignkit pairs/s over TRL pairs/s. ``mfu`` is the lowest, over alignkit's runs, of
executed FLOPs/s over the fp32 matmul peak measured right before and after that run (the higher
of the two). Executed FLOPs (``executed_flops``) count matmuls on real (unpadded) tokens only:
decoder linears, attention scores over the keys each query attends to, and the LM head only at
the positions that predict response tokens; the backward counts input gradients, and weight
gradients only for trained weights (for LoRA: the adapters, not the frozen base); the reference
pass is a forward. ``peak_rss_gb`` is alignkit's highest peak RSS over its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "alignkit/datasets/hhh/helpful.train.jsonl"
MODEL = "smollm2-135m-instruct"
LOGPS_TOLERANCE = (1e-3, 1e-4)  # per pair: |Δ| ≤ abs + rel·|logp|; measured: ≤ 1.1e-3 on -374 (fp32 sums in other orders)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_description() -> str:
    """The CPU model and the flags that decide fp32 / bf16 matmul speed (from /proc/cpuinfo)."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        import platform

        return platform.machine()
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
    return f"{fields.get('model name', 'CPU')} (flags: {' '.join(flags) or 'none of avx2/avx512'})"


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


# --- equal work: per-pair policy log-probs at the starting weights, each library its own way ---------


def trl_pair_logps(trainer, batch_size: int = 4) -> list[list[float]]:
    """[chosen_logps, rejected_logps, chosen_len, rejected_len] per pair in dataset order, by TRL's
    collator and the policy forward of its ``_compute_loss`` (``fused_lm_head``, summed over the
    completion tokens)."""
    import torch
    from torch.utils.data import DataLoader

    model = trainer.model
    was_training = model.training
    model.eval()
    loader = DataLoader(trainer.train_dataset, batch_size=batch_size, collate_fn=trainer.data_collator, shuffle=False)
    out = []
    with torch.no_grad():
        for batch in loader:
            completion_mask = batch["completion_mask"]
            inputs = {k: v for k, v in batch.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
            labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
            log_probs = model(**inputs, use_cache=False, labels=labels, fused_lm_head=True).log_probs
            logps = log_probs[:, -(completion_mask.shape[1] - 1):].sum(1)  # (2B,): chosen rows, then rejected rows
            lengths = completion_mask.sum(1)
            n = logps.shape[0] // 2
            out += [[logps[i].item(), logps[n + i].item(), int(lengths[i]), int(lengths[n + i])] for i in range(n)]
    model.train(was_training)
    return out


def alignkit_pair_logps(model, pairs: list, pad_id: int, batch_size: int = 4) -> list[list[float]]:
    """The same from alignkit's packed policy forward (``packed_pair_logps``), pairs in file order."""
    import torch

    from alignkit.train.collate import to_device
    from alignkit.train.packing import pack_pairs, packed_pair_logps

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            logps, lengths = packed_pair_logps(model, to_device(pack_pairs(chunk, pad_id), model.device))
            n = len(chunk)
            out += [[logps[i].item(), logps[n + i].item(), int(lengths[i]), int(lengths[n + i])] for i in range(n)]
    model.train(was_training)
    return out


def logps_mismatches(ours: list[list[float]], theirs: list[list[float]]) -> list[str]:
    """Pairs whose lengths differ or whose log-probs differ beyond LOGPS_TOLERANCE (empty: equal work)."""
    if len(ours) != len(theirs):
        return [f"{len(ours)} pairs scored vs {len(theirs)}"]
    absolute, relative = LOGPS_TOLERANCE
    bad = []
    for i, (a, t) in enumerate(zip(ours, theirs)):
        if a[2:] != t[2:]:
            bad.append(f"pair {i}: response lengths {a[2:]} vs {t[2:]}")
        elif any(abs(x - y) > absolute + relative * abs(y) for x, y in zip(a[:2], t[:2])):
            bad.append(f"pair {i}: log-probs {a[:2]} vs {t[:2]}")
    return bad


# --- executed FLOPs ------------------------------------------------------------------------------------


def executed_flops(model, pairs: list, *, lora: bool) -> float:
    """Matmul FLOPs one alignkit epoch executes on ``pairs`` (prompt_ids, chosen_ids, rejected_ids):
    the reference pass (forward) plus one training forward and backward per pair.

    Per pair with P prompt, C chosen, R rejected tokens (one packed row, T = P + C + R tokens):
    * decoder linears: 2·N_lin FLOPs per token forward (N_lin = weights of the decoder's Linear
      layers, adapters apart); backward 2·N_lin for input gradients (LoRA: not for the first
      layer, whose input needs no gradient) and 2·N_lin for weight gradients (full fine-tune only);
    * LoRA adapters: 2·N_lora forward, 4·N_lora backward per token (training pass only);
    * attention: 4·d per layer for each (query, key) pair attended — prompt causal, each response
      over the prompt and its own earlier tokens — and twice that backward;
    * LM head (H × V): 2·H·V at each of the C + R positions that predict a response token,
      backward 2·H·V for the input gradient and, for a full fine-tune, 2·H·V for the weight gradient.
    """
    import torch

    from alignkit.models.logprobs import _unwrap

    base = _unwrap(model)
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    n_layers = len(decoder.layers)
    n_lin = n_lora = 0
    for name, module in decoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            if "lora_" in name:
                n_lora += module.weight.numel()
            else:
                n_lin += module.weight.numel()
    attn = decoder.layers[0].self_attn
    d_attn = attn.q_proj.out_features if hasattr(attn.q_proj, "out_features") else attn.q_proj.base_layer.out_features
    head_params = head.weight.numel()
    total = 0.0
    for pair in pairs:
        P, C, R = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
        tokens, predicted = P + C + R, C + R
        attended = P * (P + 1) / 2 + C * P + C * (C + 1) / 2 + R * P + R * (R + 1) / 2  # (query, key) pairs
        linear_fwd = 2 * n_lin * tokens
        attn_fwd = 4 * d_attn * n_layers * attended
        head_fwd = 2 * head_params * predicted
        reference = linear_fwd + attn_fwd + head_fwd
        if lora:
            backward = (linear_fwd * (n_layers - 1) / n_layers + 2 * attn_fwd + head_fwd
                        + 4 * n_lora * tokens)
            forward = reference + 2 * n_lora * tokens
        else:
            backward = 2 * linear_fwd + 2 * attn_fwd + 2 * head_fwd
            forward = reference
        total += reference + forward + backward
    return total


# --- one run each ----------------------------------------------------------------------------------------


def run_trl(lora: bool, precompute: bool, n_pairs: int, batch: int, out: Path, check: bool) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignkit.models import load_policy, load_tokenizer

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
    check_start = time.perf_counter()
    logps = trl_pair_logps(trainer) if check else None
    check_seconds = time.perf_counter() - check_start  # not TRL's work: taken out of its time
    trainer.train()
    trainer.save_model(str(out / "trl" / "model"))  # alignkit's fit saves too: the same work on both sides
    elapsed = time.perf_counter() - start - check_seconds
    first = next(r for r in trainer.state.log_history if "loss" in r)
    return {"seconds": elapsed, "first_loss": first["loss"], "logps": logps}


def run_alignkit(lora: bool, n_pairs: int, batch: int, out: Path, check: bool) -> dict:
    from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
    from alignkit.train.loop import fit
    from alignkit.train.setup import load_pairs, prepare_model

    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n_pairs)))
    cfg = DPOConfig(model=MODEL, data=str(out / "data.jsonl"), output_dir=str(out / "ak"), batch_size=batch, epochs=1,
                    lr=5e-6, beta=0.1, max_length=512, lora_r=16 if lora else None, seed=0, warmup_ratio=0.1)
    model, tokenizer = prepare_model(cfg)
    _warm_up(model)
    logps = None
    if check:  # before the timed region: the same pairs in file order
        logps = alignkit_pair_logps(model, load_pairs(cfg.data, tokenizer, cfg), tokenizer.pad_token_id)
    peak_before = matmul_peak_gflops()
    start = time.perf_counter()
    method = DPOMethod(cfg, model, tokenizer, [PairItem(p) for p in load_pairs(cfg.data, tokenizer, cfg)])
    fit(method, cfg)
    elapsed = time.perf_counter() - start
    peak = max(peak_before, matmul_peak_gflops())
    first = json.loads((out / "ak" / "metrics.jsonl").read_text().splitlines()[0])
    return {"seconds": elapsed, "first_loss": first["loss"], "logps": logps, "peak_gflops": peak,
            "flops": executed_flops(model, [it.pair for it in method.train_items], lora=lora),
            "tokens": sum(method.length(it) for it in method.train_items)}


def child(spec: dict) -> None:
    import torch

    torch.manual_seed(0)
    out = Path(spec["out"])
    if spec["lib"] == "trl":
        result = run_trl(spec["lora"], spec["precompute"], spec["pairs"], spec["batch"], out, spec["check"])
    else:
        result = run_alignkit(spec["lora"], spec["pairs"], spec["batch"], out, spec["check"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("CHILD " + json.dumps(result))


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat), None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _others_share(seconds: float = 2.0) -> float:
    """Share of the machine's CPU that other processes use right now (0 = idle, 1 = every core busy)."""
    before = _busy_seconds()
    time.sleep(seconds)
    after = _busy_seconds()
    return 0.0 if before is None else (after - before) / seconds / os.cpu_count()


def _wait_for_quiet(max_wait: float, threshold: float = 0.1) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of the CPU; returns the last share."""
    deadline = time.time() + max_wait
    share = _others_share()
    while share > threshold and time.time() < deadline:
        share = _others_share(5.0)
    return share


def run_child(script: str, spec: dict, env: dict | None = None, max_wait: float = 0.0) -> dict:
    """``script --child SPEC`` in its own process (``spec["out"]``: a scratch directory), and the
    JSON it prints after ``CHILD``. Also measured: its wall time, and the share of the machine's CPU
    that *other* processes took meanwhile (busy CPU time of the machine minus the child's own),
    because on a shared machine a neighbour's load changes a run's speed more than any
    optimisation does."""
    import tempfile

    _wait_for_quiet(max_wait)
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "out": tmp}
        busy, own = _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, **(env or {})})
        wall = time.time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
        others = 0.0 if busy is None else max(0.0, (_busy_seconds() - busy - child_cpu) / wall / os.cpu_count())
    line = next((l for l in proc.stdout.splitlines() if l.startswith("CHILD ")), None)
    if line is None:
        sys.exit(f"{spec['lib']} run failed:\n{proc.stderr[-4000:]}")
    return {**json.loads(line[6:]), "others_cpu": others, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 pairs; the allocator pair for the full fine-tune only")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--wait-quiet", type=float, default=180, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes to leave the CPU idle (default 180)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    n_pairs = args.pairs or (16 if args.quick else 48)

    import torch
    import trl

    from alignkit.train.allocator import glibc_env

    print(f"{cpu_description()}; {torch.get_num_threads()} torch threads; torch {torch.__version__}, TRL {trl.__version__}; "
          f"fp32 matmul peak at start {matmul_peak_gflops():.1f} GFLOP/s")
    common = {"pairs": n_pairs, "batch": args.batch}
    ratios: dict[str, float] = {}
    mfus, rss, others, reference_logps = [], [], [], None
    for lora in (False, True):
        kind = "lora" if lora else "full"
        label = "LoRA r=16" if lora else "full fine-tune"

        def trl_run(precompute: bool, env: dict | None = None, check: bool = False) -> dict:
            result = run_child(__file__, {"lib": "trl", "lora": lora, "precompute": precompute, "check": check, **common}, env,
                                args.wait_quiet)
            others.append(result["others_cpu"])
            print(f"  TRL {label}, {'best' if precompute else 'default'}{' + allocator' if env else ''}: "
                  f"{n_pairs / result['seconds']:.3f} pairs/s; peak RSS {result['peak_rss_mb'] / 1024:.2f} GB; "
                  f"other processes used {others[-1]:.0%} of the CPU meanwhile", flush=True)
            return result

        def alignkit_run(check: bool = False) -> dict:
            result = run_child(__file__, {"lib": "alignkit", "lora": lora, "precompute": True, "check": check, **common}, None,
                                args.wait_quiet)
            mfus.append(result["flops"] / result["seconds"] / 1e9 / result["peak_gflops"])
            rss.append(result["peak_rss_mb"])
            others.append(result["others_cpu"])
            print(f"  alignkit {label}: {n_pairs / result['seconds']:.3f} pairs/s, {result['tokens'] / result['seconds']:.0f} "
                  f"tokens/s, executed {result['flops'] / result['seconds'] / 1e9:.1f} GFLOP/s = {mfus[-1]:.0%} of the "
                  f"{result['peak_gflops']:.0f} GFLOP/s peak around it; peak RSS {result['peak_rss_mb'] / 1024:.2f} GB; "
                  f"other processes used {others[-1]:.0%} of the CPU meanwhile", flush=True)
            return result

        runs = {"trl_default": trl_run(False, check=True), "alignkit": alignkit_run(check=True), "trl_best": trl_run(True)}
        pairs_to_check = [("alignkit", runs["alignkit"]["logps"]), ("TRL", runs["trl_default"]["logps"])]
        if reference_logps is None:
            reference_logps = pairs_to_check[0][1]
        for who, logps in pairs_to_check:  # the LoRA runs start from the same weights (adapter B = 0)
            bad = logps_mismatches(logps, reference_logps)
            if bad:
                print(f"EQUAL-WORK CHECK FAILED ({label}, {who} vs the first alignkit run): " + "; ".join(bad[:5]))
                sys.exit(1)
        if not (args.quick and lora):
            runs["trl_best_alloc"] = trl_run(True, env=glibc_env())
            runs["alignkit_alloc"] = alignkit_run()
        ak = runs["alignkit"]
        for setting in ("default", "best"):
            theirs = runs[f"trl_{setting}"]
            ratios[f"{kind}_{setting}"] = theirs["seconds"] / ak["seconds"]
            print(f"{kind}_{setting:8s} pairs/s alignkit {n_pairs / ak['seconds']:.3f} vs TRL {n_pairs / theirs['seconds']:.3f} "
                  f"(x{ratios[f'{kind}_{setting}']:.2f}); peak RSS alignkit {ak['peak_rss_mb'] / 1024:.2f} GB vs TRL "
                  f"{theirs['peak_rss_mb'] / 1024:.2f} GB; first-step loss {ak['first_loss']:.4f} vs {theirs['first_loss']:.4f}")
        if "trl_best_alloc" in runs:
            theirs, ours = runs["trl_best_alloc"], runs["alignkit_alloc"]
            ratios[f"{kind}_equal_alloc"] = theirs["seconds"] / ours["seconds"]
            print(f"{kind}_equal_alloc pairs/s alignkit {n_pairs / ours['seconds']:.3f} vs TRL best with alignkit's "
                  f"allocator settings {n_pairs / theirs['seconds']:.3f} (x{ratios[f'{kind}_equal_alloc']:.2f}); the "
                  f"allocator alone moved TRL best from {n_pairs / runs['trl_best']['seconds']:.3f} to "
                  f"{n_pairs / theirs['seconds']:.3f} pairs/s; peak RSS TRL {theirs['peak_rss_mb'] / 1024:.2f} GB")
        print(f"equal work ({label}): {len(ak['logps'])} pairs, per-pair policy log-probs and response lengths agree "
              f"(|Δ| ≤ {LOGPS_TOLERANCE[0]} + {LOGPS_TOLERANCE[1]}·|logp|)", flush=True)
    keys = ["full_default", "full_best", "lora_default", "lora_best", "full_equal_alloc", "lora_equal_alloc"]
    if max(others) > 0.1:
        print(f"WARNING: other processes used up to {max(others):.0%} of the CPU during a run: these ratios and the "
              "MFU measure the neighbours as much as the libraries")
    print("RESULT " + " ".join(f"{k}={ratios[k]:.2f}" for k in keys if k in ratios)
          + f" mfu={min(mfus):.2f} peak_rss_gb={max(rss) / 1024:.2f} others_cpu={max(others):.2f}")


if __name__ == "__main__":
    main()
