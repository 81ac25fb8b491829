"""Throughput of the code sandbox: sandboxed runs per second and unit-test cases per second.

    .venv/bin/python scripts/bench_sandbox.py [--rows 48]

Runs MBPP-shaped rows (a short solution, 3 asserts) through ``alignkit.rewards.code_tests``,
once with one worker and once with one worker per CPU, after timing empty programs (the fixed
cost of a sandbox: namespaces, tmpfs mounts, uid switch, interpreter start-up).
"""

from __future__ import annotations

import argparse
import os
import time

from alignkit.rewards import code_tests, run_in_sandbox

SOLUTION = "```python\ndef remove_occ(s, ch):\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]\n```"
TESTS = [
    'assert remove_occ("hello", "l") == "heo"',
    'assert remove_occ("abcda", "a") == "bcd"',
    'assert remove_occ("PHP", "P") == "H"',
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args()
    run_in_sandbox("pass", timeout_s=10)  # the one-off availability probe, not timed

    start = time.perf_counter()
    for _ in range(args.rows):
        run_in_sandbox("pass", timeout_s=10)
    empty_per_s = args.rows / (time.perf_counter() - start)

    results = {}
    for workers in sorted({1, os.cpu_count() or 1}):
        start = time.perf_counter()
        values = code_tests(["p"] * args.rows, [SOLUTION] * args.rows, tests=[TESTS] * args.rows, max_workers=workers)
        elapsed = time.perf_counter() - start
        assert values == [1.0] * args.rows, values
        results[workers] = args.rows * len(TESTS) / elapsed
        print(f"workers={workers}: {args.rows} rows x {len(TESTS)} tests in {elapsed:.2f} s = "
              f"{args.rows / elapsed:.1f} rows/s, {results[workers]:.1f} test cases/s")
    print(f"empty program: {empty_per_s:.1f} sandboxed runs/s (1 worker); cpus={os.cpu_count()}")
    best = max(results, key=results.get)
    print(f"RESULT runs_per_s_1worker={empty_per_s:.1f} cases_per_s_1worker={results[1]:.1f} "
          f"cases_per_s_{best}workers={results[best]:.1f}")


if __name__ == "__main__":
    main()
