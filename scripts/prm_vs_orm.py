"""Best-of-N on held-out arith-steps problems: PRM (min over steps) vs ORM vs majority vote vs
random vs the verifier (oracle), pass@1 of the selected answer at N = 1, 4, 16 with 95 % Wilson CIs.

    alignkit prm --data arith-steps --eval-data arith-steps:test --label-mode step  --output-dir runs/prm-arith-step  ...
    alignkit prm --data arith-steps --eval-data arith-steps:test --label-mode final --output-dir runs/prm-arith-final ...
    python scripts/prm_vs_orm.py --prm runs/prm-arith-step --orm runs/prm-arith-final --limit 60 --samples runs/bon/samples.jsonl

One pool of max(N) samples per problem is drawn from the policy (``--samples``: written, and
reused when the file exists, so scorers can be swapped without sampling again) and every rule
picks from the same disjoint groups of it (``alignkit.bon.compare``). The verifier (``math``:
math-verify against the answer) decides correctness; "oracle" picks a verified sample whenever
the group has one (the ceiling, pass@N). Prints a markdown table and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def sample(args) -> list[dict]:
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.rewards import math_answer
    from alignkit.rollout import make_engine
    from alignkit.train.online import load_prompts

    tokenizer = load_tokenizer(args.model)
    rows = load_prompts(args.prompts, tokenizer, max_prompt_length=512)[: args.limit]
    engine = make_engine(load_policy(args.model), tokenizer, max_batch=args.batch)
    out, start = [], time.perf_counter()
    for first in range(0, len(rows), args.chunk):
        part = rows[first : first + args.chunk]
        rollouts = engine.generate([r.prompt_ids for r in part], n=args.pool, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, seed=args.seed + first)
        for k, row in enumerate(part):
            texts = rollouts.texts[k * args.pool : (k + 1) * args.pool]
            verified = math_answer([row.prompt] * len(texts), texts, answer=[row.columns["answer"]] * len(texts))
            out.append({"prompt": row.prompt, "answer": row.columns["answer"], "texts": texts,
                        "correct": [v == 1.0 for v in verified]})
        print(f"sampled {len(out)}/{len(rows)} problems ({time.perf_counter() - start:.0f}s)", flush=True)
    return out


def main() -> None:
    from alignkit.bon import extract_answer
    from alignkit.bon.compare import at_random, by_score, by_vote, table
    from alignkit.rewards.process import ProcessRewardModel

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="The policy that samples.")
    parser.add_argument("--prompts", default="arith-steps:problems")
    parser.add_argument("--prm", required=True, help="Run directory of `alignkit prm --label-mode step`.")
    parser.add_argument("--orm", required=True, help="Run directory of `alignkit prm --label-mode final`.")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=4, help="Problems per generation call (× pool rows).")
    parser.add_argument("--batch", type=int, default=64, help="Rows the engine decodes at once.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", default="runs/bon/samples.jsonl")
    parser.add_argument("--output", default="runs/bon/prm_vs_orm.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.pool = max(args.ns)

    path = Path(args.samples)
    if path.exists():
        problems = [json.loads(line) for line in path.read_text().splitlines()][: args.limit]
    else:
        problems = sample(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    for name, directory, aggregate in (("prm", args.prm, "min"), ("orm", args.orm, "last")):
        scorer = ProcessRewardModel.from_pretrained(directory, aggregate=aggregate)
        for p in problems:
            p[name] = scorer([p["prompt"]] * len(p["texts"]), p["texts"])
    for p in problems:
        p["answer"] = [extract_answer(t) for t in p["texts"]]
        p["oracle"] = [float(c) for c in p["correct"]]
    rules = {"random": at_random(args.seed), "majority vote": by_vote, "ORM (last step)": by_score("orm"),
             "PRM (min over steps)": by_score("prm"), "verifier (oracle)": by_score("oracle")}
    result = table(problems, rules, args.ns)
    print(f"\n{len(problems)} problems, {args.pool} samples each, T={args.temperature}, ≤{args.max_new_tokens} tokens\n")
    print("| selection | " + " | ".join(f"N = {n}" for n in args.ns) + " |")
    print("|---|" + "---|" * len(args.ns))
    for name, row in result.items():
        print(f"| {name} | " + " | ".join(f"{row[n]['accuracy']:.1%} ({row[n]['ci_low']:.1%}–{row[n]['ci_high']:.1%})"
                                         for n in args.ns) + " |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "table": result}, indent=2))


if __name__ == "__main__":
    main()
