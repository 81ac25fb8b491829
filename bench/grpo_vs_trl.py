"""GRPO training speed: alignkit vs TRL's GRPOTrainer on identical work, in one run.

    .venv/bin/python bench/grpo_vs_trl.py --quick   # 1 warm-up + 4 timed steps per side (~2 min on 2 idle cores)
    .venv/bin/python bench/grpo_vs_trl.py           # 1 warm-up + 16 timed steps per side, twice each (~10 min)

Both sides: the bundled ``smollm2-135m-instruct`` (the same local directory, from
``resolve_model_path``), full fine-tune (no LoRA), fp32 weights and compute (TRL's bf16 autocast
and gradient checkpointing turned off), the bundled ``arith`` training prompts (chat messages;
each side applies the chat template with the generation prompt, and the token ids are checked
equal), the same reward function object (``alignkit.rewards.math_answer``, TRL's reward
protocol), G = 8 samples per prompt at temperature 1 (top-p 1, top-k off), at most 32 new
tokens, 8 completions per optimizer step (1 prompt; one micro-batch, no accumulation), one
generation per step and one pass over it (``steps_per_generation = num_iterations = 1``: no π_old
forward on either side), loss ``dapo``, β = 0 (no reference model), lr 1e-6 constant after no
warm-up, clip-norm 1.0 (G, batch, token limit and loss type are the defaults of --generations,
--batch, --max-tokens, --loss-type). alignkit keeps all-equal groups (``zero_signal="keep"``: TRL trains on
them too, with zero advantage) and samples in fp32 with its own engine (``rollout_dtype=float32``);
TRL samples with ``model.generate``. Each side gets the prompts in the same order (alignkit's
seeded draw order; TRL's dataset in that order, unshuffled).

Timed, on each side: every optimizer step after the first (the warm-up), from the start of the
step to the end of its optimizer update — sampling, reward, advantages, forward, backward,
gradient clipping, AdamW. For alignkit that is the loop's ``time/step`` (``train/loop.py``); for
TRL the time from the ``on_step_begin`` to the ``on_step_end`` callback (the generation happens
inside ``training_step``, between the two). Not timed: model loading, trainer construction, the
warm-up step, logging between steps, alignkit's final save.

Counted: completions actually generated, as seen by the reward function (a counting wrapper
around ``math_answer``, the same on both sides), and their token lengths (EOS included on both
sides). The bench stops with exit status 1 unless both sides scored the same prompts in the same
order, G times each, from the same prompt token ids, with no completion over the token limit.
Sampling differs (two RNGs), so completion lengths differ a little: both means are printed, and
tokens/s beside completions/s. Also printed: the share of the timed step spent sampling (alignkit's
``time/generate``; TRL's ``_generate``: tokenize, ``model.generate``, decode).

Each side runs in its own subprocess, so ``peak_gb`` is that process's own peak RSS
(``ru_maxrss``). On a shared machine a neighbour's load moves the numbers: before each run the
bench waits (``--wait-quiet``) for the CPU to go idle and reports the share of the machine's CPU
other processes used during the run (``others_cpu``: the larger over the two runs that count; above 0.1
the ratio is not to be trusted). With ``--rounds N`` each side runs N times, alternating, and its fastest
run counts (the same rule for both).

The last line is machine-readable:

    RESULT ratio=… alignkit_cps=… trl_cps=… alignkit_peak_gb=… trl_peak_gb=… others_cpu=…

``ratio`` is alignkit completions/s over TRL completions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_vs_trl import cpu_description, run_child  # noqa: E402  (same bench conventions)

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "alignkit/datasets/arith/arith.train.jsonl"
MODEL = "smollm2-135m-instruct"
LR = 1e-6  # TRL's GRPO default, given to both


# --- the shared reward: math_answer, counting what it is asked to score -------------------------------


def counting_math_reward(calls: list[dict]):
    """``math_answer`` (TRL's protocol) that also appends, per call, the prompts (their user text),
    completion token lengths and rewards it saw to ``calls``."""
    from alignkit.rewards.math_answer import math_answer

    def math(prompts, completions, completion_ids=None, **columns):
        rewards = math_answer(prompts, completions, completion_ids, **columns)
        calls.append({"prompts": [p[-1]["content"] if isinstance(p, list) else p for p in prompts],
                      "lengths": [len(ids) for ids in completion_ids], "rewards": rewards})
        return rewards

    return math


def prompt_rows(n: int, seed: int) -> list[dict]:
    """The first ``n`` arith training rows, in the order alignkit draws them (its seeded epoch order)."""
    from alignkit.train.loop import epoch_order

    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:n]]
    return [rows[i] for i in epoch_order(n, 0, seed)]


# --- one run each -------------------------------------------------------------------------------------


def run_trl(spec: dict, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignkit.models.loading import resolve_model_path

    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    calls: list[dict] = []
    steps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            steps.append(time.perf_counter() - self.start)

    args = GRPOConfig(
        output_dir=str(out / "trl"), max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, num_generations=spec["generations"],
        max_completion_length=spec["max_tokens"], temperature=1.0, top_p=1.0, top_k=0, loss_type=spec["loss_type"],
        beta=0.0, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, seed=spec["seed"],
        shuffle_dataset=False,  # the dataset is already in alignkit's draw order
        # fp32 like alignkit: TRL 1.16 defaults to bf16 autocast and gradient checkpointing.
        bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    rows = prompt_rows(spec["steps"] * spec["batch"] // spec["generations"], spec["seed"])
    trainer = GRPOTrainer(model=model, reward_funcs=[counting_math_reward(calls)], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[StepTimer()])
    prompt_ids = [list(ids) for ids in trainer._tokenize_prompts([r["prompt"] for r in rows])[0]]  # TRL's own path
    generate_seconds: list[float] = []
    generate = trainer._generate  # prompts -> completions (tokenize, model.generate, decode): timed like alignkit's time/generate

    def timed_generate(*a, **kw):
        start = time.perf_counter()
        out = generate(*a, **kw)
        generate_seconds.append(time.perf_counter() - start)
        return out

    trainer._generate = timed_generate
    trainer.train()
    return {"steps": steps, "calls": calls, "prompt_ids": prompt_ids, "generate_seconds": generate_seconds}


def run_alignkit(spec: dict, out: Path) -> dict:
    from alignkit.rewards import RewardSet
    from alignkit.train.grpo import GRPOConfig, build_grpo
    from alignkit.train.loop import fit

    n_prompts = spec["steps"] * spec["batch"] // spec["generations"]
    # The first n_prompts rows in file order: alignkit draws them in the order prompt_rows gives.
    (out / "prompts.jsonl").write_text("".join(line + "\n" for line in PROMPTS.read_text().splitlines()[:n_prompts]))
    cfg = GRPOConfig(
        model=MODEL, prompts=str(out / "prompts.jsonl"), output_dir=str(out / "ak"), reward=["math"],
        max_steps=spec["steps"], batch_size=spec["batch"], grad_accum=1, steps_per_generation=1, num_iterations=1,
        num_generations=spec["generations"], max_new_tokens=spec["max_tokens"], temperature=1.0, top_p=1.0, top_k=0,
        loss_type=spec["loss_type"], beta=0.0, lr=LR, lr_schedule="constant", warmup_ratio=0.0, max_grad_norm=1.0,
        seed=spec["seed"], zero_signal="keep", dtype="float32", rollout_dtype="float32", log_every=1)
    method = build_grpo(cfg)
    calls: list[dict] = []
    method.rewards = RewardSet({"math": counting_math_reward(calls)})  # the same function as "math", counting
    order = prompt_rows(len(method.train_items), spec["seed"])
    by_id = {r.columns["id"]: r for r in method.train_items}
    prompt_ids = [list(by_id[r["id"]].prompt_ids) for r in order]
    fit(method, cfg)
    metrics = [json.loads(line) for line in (out / "ak" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "time/step" in m]
    return {"steps": [m["time/step"] for m in train], "calls": calls, "prompt_ids": prompt_ids,
            "generate_seconds": [m.get("time/generate", 0.0) for m in train]}


def child(spec: dict) -> None:
    import torch

    torch.manual_seed(spec["seed"])
    result = (run_trl if spec["lib"] == "trl" else run_alignkit)(spec, Path(spec["out"]))  # run_child's scratch directory
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    print("CHILD " + json.dumps(result))


# --- equal work and the numbers ---------------------------------------------------------------------


def summarise(result: dict, warmup: int, max_tokens: int) -> dict:
    """Completions, tokens and seconds of the timed steps (one reward call per step on both sides)."""
    calls, steps = result["calls"], result["steps"]
    if len(calls) != len(steps):
        sys.exit(f"EQUAL-WORK CHECK FAILED: {len(calls)} reward calls for {len(steps)} steps (expected one generation per step)")
    timed = calls[warmup:]
    lengths = [n for call in timed for n in call["lengths"]]
    rewards = [r for call in timed for r in call["rewards"] if r is not None]
    seconds = sum(steps[warmup:])
    return {"completions": len(lengths), "tokens": sum(lengths), "seconds": seconds, "cps": len(lengths) / seconds,
            "tps": sum(lengths) / seconds, "mean_length": sum(lengths) / len(lengths), "max_length": max(lengths),
            "at_limit": sum(n >= max_tokens for n in lengths) / len(lengths),
            "reward": sum(rewards) / max(len(rewards), 1), "peak_gb": result["peak_rss_mb"] / 1024,
            "others_cpu": result["others_cpu"], "wall": result["wall"], "threads": result["threads"],
            "generate_share": sum(result["generate_seconds"][warmup:]) / seconds, "step_seconds": steps[warmup:]}


def check_equal_work(ours: dict, theirs: dict, generations: int, batch: int, max_tokens: int) -> list[str]:
    """What differs between the two sides' work (empty: the same prompts, order, G and token limit)."""
    bad = []
    if ours["prompt_ids"] != theirs["prompt_ids"]:
        bad.append("prompt token ids differ (chat template)")
    seen = {side: [p for call in r["calls"] for p in call["prompts"]] for side, r in (("alignkit", ours), ("TRL", theirs))}
    if seen["alignkit"] != seen["TRL"]:
        bad.append("the reward function saw different prompts or another order")
    for side, r in (("alignkit", ours), ("TRL", theirs)):
        for i, call in enumerate(r["calls"]):
            groups = [call["prompts"][j : j + generations] for j in range(0, len(call["prompts"]), generations)]
            if len(call["prompts"]) != batch or any(len(g) != generations or len(set(g)) != 1 for g in groups):
                bad.append(f"{side} step {i + 1}: not {batch} completions, {generations} per prompt")
            if max(call["lengths"]) > max_tokens:
                bad.append(f"{side} step {i + 1}: a completion of {max(call['lengths'])} tokens > {max_tokens}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 timed steps (default 16)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per side (after 1 warm-up step)")
    parser.add_argument("--generations", type=int, default=8, help="G, samples per prompt (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="completions per optimizer step (default 8)")
    parser.add_argument("--max-tokens", type=int, default=32, help="longest completion (default 32)")
    parser.add_argument("--loss-type", default="dapo", choices=["grpo", "dapo", "dr_grpo", "bnpo"])  # the ones TRL names alike
    parser.add_argument("--rounds", type=int, help="runs per side, alternating; each side's fastest counts (default: 1 with --quick, else 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=60, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes to leave the CPU idle (default 60)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.batch % args.generations:
        sys.exit(f"--batch {args.batch} must be a multiple of --generations {args.generations}")
    warmup = 1
    timed_steps = args.steps or (4 if args.quick else 16)
    spec = {"steps": warmup + timed_steps, "generations": args.generations, "batch": args.batch,
            "max_tokens": args.max_tokens, "loss_type": args.loss_type, "seed": args.seed}

    import torch
    import transformers
    import trl

    print(f"{cpu_description()}; {os.cpu_count()} CPUs; {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, TRL {trl.__version__}; load average {os.getloadavg()[0]:.2f}")
    print(f"work per side: {warmup} warm-up + {timed_steps} timed steps of {args.batch} completions "
          f"({args.batch // args.generations} prompt(s) x G={args.generations}), <= {args.max_tokens} new tokens, "
          f"loss {args.loss_type}, fp32, full fine-tune", flush=True)
    runs: dict[str, list[dict]] = {"trl": [], "alignkit": []}
    for _ in range(args.rounds or (1 if args.quick else 2)):
        for lib in ("trl", "alignkit"):
            result = run_child(__file__, {**spec, "lib": lib}, max_wait=args.wait_quiet)
            stats = summarise(result, warmup, args.max_tokens)
            runs[lib].append({**result, **stats})
            name = "TRL" if lib == "trl" else "alignkit"
            print(f"  {name}: {stats['completions']} completions in {stats['seconds']:.1f} s = {stats['cps']:.3f} completions/s, "
                  f"{stats['tps']:.1f} completion tokens/s; mean length {stats['mean_length']:.1f} tokens (max "
                  f"{stats['max_length']}, {stats['at_limit']:.0%} at the limit); mean reward {stats['reward']:.3f}; "
                  f"sampling {stats['generate_share']:.0%} of the step time; peak RSS {stats['peak_gb']:.2f} GB; process "
                  f"wall {stats['wall']:.0f} s; other processes used {stats['others_cpu']:.0%} of the CPU meanwhile; "
                  f"timed steps (s): {' '.join(f'{t:.1f}' for t in stats['step_seconds'])}", flush=True)
    bad = check_equal_work(runs["alignkit"][0], runs["trl"][0], args.generations, args.batch, args.max_tokens)
    if bad:
        print("EQUAL-WORK CHECK FAILED: " + "; ".join(bad[:5]))
        sys.exit(1)
    print(f"equal work: the same {len(runs['trl'][0]['prompt_ids'])} prompts (token ids equal) in the same order, "
          f"{args.generations} completions each, <= {args.max_tokens} tokens, on both sides")
    ours = max(runs["alignkit"], key=lambda r: r["cps"])
    theirs = max(runs["trl"], key=lambda r: r["cps"])
    ratio = ours["cps"] / theirs["cps"]
    others = max(ours["others_cpu"], theirs["others_cpu"])  # of the two runs that count
    print(f"completions/s alignkit {ours['cps']:.3f} vs TRL {theirs['cps']:.3f} (x{ratio:.2f}); completion tokens/s "
          f"{ours['tps']:.1f} vs {theirs['tps']:.1f} (x{ours['tps'] / theirs['tps']:.2f}); peak RSS "
          f"{ours['peak_gb']:.2f} GB vs {theirs['peak_gb']:.2f} GB")
    if others > 0.1:
        print(f"WARNING: other processes used up to {others:.0%} of the CPU during a counted run: the ratio measures the "
              "neighbours as much as the libraries")
    print(f"RESULT ratio={ratio:.2f} alignkit_cps={ours['cps']:.3f} trl_cps={theirs['cps']:.3f} "
          f"alignkit_peak_gb={ours['peak_gb']:.2f} trl_peak_gb={theirs['peak_gb']:.2f} others_cpu={others:.2f}")


if __name__ == "__main__":
    main()
