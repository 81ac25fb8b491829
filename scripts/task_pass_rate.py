"""Base pass rate of a model on a verifiable task at temperature 1 (sizing the bundled tasks).

    python scripts/task_pass_rate.py --levels add1 add20 add2 --prompts 32 --n 2 --max-new-tokens 64
    python scripts/task_pass_rate.py --split arith:test --prompts 200 --n 1
    python scripts/task_pass_rate.py --split constraints:test --reward constraints --max-new-tokens 96

Samples ``n`` completions per prompt with the rollout engine — of seeded arithmetic problems per
level, or of a bundled split's rows — and scores them with a reward (default ``math``: the final
answer after 'Answer:' or elsewhere, math-verify). A completion passes when its reward is 1.
Prints one line per level or split: pass rate with a 95% Wilson interval, mean reward, tokens/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from alignkit.eval.metrics import wilson_interval


def main() -> None:
    from alignkit.datasets.arith import LEVELS, rows
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.rewards import get_reward_function
    from alignkit.rollout import make_engine

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--reward", default="math", help="A name in alignkit.rewards.REWARD_FUNCTIONS.")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS))
    parser.add_argument("--split", help="Score a bundled split instead (e.g. arith:test); --prompts caps its rows.")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", help="Write every completion with its row and score to this JSONL file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer(args.model)
    model = load_policy(args.model)
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    engine = make_engine(model, tokenizer, dtype=dtype)
    print(f"engine {type(engine).__name__} dtype {getattr(engine, 'dtype', '?')}")
    for name in [args.split] if args.split else args.levels:
        if args.split:
            from alignkit.train.setup import data_files

            data = [json.loads(line) for f in data_files(args.split) for line in open(f)][: args.prompts]
        else:
            level = LEVELS[name]
            problems = [(a, b) for a, b in level.problems() if level.symbol != "-" or a > b]
            picked = random.Random(args.seed).sample(problems, args.prompts)
            data = [rows(level, a, b, "bench", i) for i, (a, b) in enumerate(picked)]
        start = time.perf_counter()
        out = engine.generate([d["prompt"] for d in data], n=args.n, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, seed=args.seed)
        seconds = time.perf_counter() - start
        columns = {key: [data[i].get(key) for i in out.prompt_index] for key in data[0] if key != "prompt"}
        scores = get_reward_function(args.reward)(prompts=[data[i]["prompt"] for i in out.prompt_index],
                                                   completions=out.texts, **columns)
        k, n = sum(s == 1.0 for s in scores), len(scores)
        mean = sum(s for s in scores if s is not None) / max(sum(s is not None for s in scores), 1)
        low, high = wilson_interval(k, n)
        hinted = sum("Answer:" in t for t in out.texts)
        print(f"{name}: pass {k}/{n} = {k / n:.1%} (95% CI {low:.1%}-{high:.1%}); mean reward {mean:.3f}; 'Answer:' in {hinted}/{n}; "
              f"{out.num_tokens} tokens in {seconds:.1f}s ({out.num_tokens / seconds:.0f} tok/s); "
              f"length-capped {out.finish_reasons.count('length')}")
        print("   e.g.", repr(out.texts[0][:160]))
        if args.save:
            with open(args.save, "a", encoding="utf-8") as f:
                for i, text, score in zip(out.prompt_index, out.texts, scores):
                    f.write(json.dumps({**data[i], "completion": text, "score": score}) + "\n")
        if args.reward == "constraints":  # which constraints the model meets, one by one
            from collections import Counter

            from alignkit.rewards import constraint_failures

            met, asked = Counter(), Counter()
            for text, constraints in zip(out.texts, columns["constraints"]):
                failed = set(constraint_failures(text, constraints))
                asked.update(list(constraints))
                met.update(k for k in constraints if k not in failed)
            print("   met per constraint:", ", ".join(f"{k} {met[k]}/{asked[k]}" for k in sorted(asked)))


if __name__ == "__main__":
    main()
