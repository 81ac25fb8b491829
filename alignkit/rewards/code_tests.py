"""Reward for generated code: the fraction of a row's unit tests it passes, run in the sandbox.

The completion's code is its last fenced block (```python, ```py or a bare ```), or the whole
text when it has none. The row's tests (column ``tests`` by default) are either a list of
snippets — each one a test, e.g. MBPP's ``assert remove_Occ("hello", "l") == "heo"`` — or one
string, a whole test program (pass/fail). One sandbox run per completion: a harness loads the
solution (as module ``solution``, so its ``if __name__ == "__main__"`` demo does not run), then
runs each test in the solution's namespace and reports each outcome on a private copy of
stdout, tagged with a random nonce; the solution's own prints go to /dev/null and do not use up
the output cap. A test counts as passed only if its report arrived, so a solution that hangs or
exits early fails the tests it did not reach.

Limit: the solution runs in the harness's process, so a solution written to cheat (digging the
nonce out of the harness's frames) could forge reports. The sandbox keeps the host safe from
such code; honest scoring against adversarial code needs one process per test.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from alignkit.rewards.protocol import column, completion_text
from alignkit.rewards.sandbox import SandboxResult, run_in_sandbox

_PYTHON_LANGUAGES = ("", "python", "python3", "py")

_HARNESS = """\
import os, sys
_report_fd = os.dup(1)
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
def _report(line):
    os.write(_report_fd, ({nonce!r} + " " + line + "\\n").encode())
_namespace = {{"__name__": "solution"}}
try:
    exec(compile({code!r}, "solution.py", "exec"), _namespace)
except BaseException as error:
    _report("load-error " + type(error).__name__)
    os._exit(0)
for _index, _test in enumerate({tests!r}):
    try:
        exec(compile(_test, "test_%d.py" % _index, "exec"), _namespace)
        _report("pass %d" % _index)
    except BaseException as error:
        _report("fail %d %s" % (_index, type(error).__name__))
os._exit(0)
"""


def extract_code(text: str) -> str:
    """The last fenced Python (or unlabelled) code block of ``text``; ``text`` itself if none.
    Fences are read line by line (a line opening with ``` starts a block, a bare ``` ends it),
    so the closing fence of one block is never taken for the opening of the next."""
    blocks, current, language = [], None, ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            current, language = [], stripped[3:].strip().lower()
        elif current is not None and stripped == "```":
            if language in _PYTHON_LANGUAGES:
                blocks.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks[-1] if blocks else text


@dataclass(frozen=True)
class CodeTestOutcome:
    passed: int
    total: int
    sandbox: SandboxResult  # stderr holds the solution's tracebacks, if any


def run_tests(code: str, tests: list[str], *, timeout_s: float = 10.0, memory_mb: int = 512) -> CodeTestOutcome:
    """Run ``code`` then each test snippet in one sandbox; count the tests that passed."""
    nonce = secrets.token_hex(16)
    result = run_in_sandbox(_HARNESS.format(nonce=nonce, code=code, tests=list(tests)), timeout_s=timeout_s, memory_mb=memory_mb)
    passed = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == nonce and parts[1] == "pass" and parts[2].isdigit():
            passed.add(int(parts[2]))
    return CodeTestOutcome(passed=len(passed & set(range(len(tests)))), total=len(tests), sandbox=result)


def code_tests(
    prompts,
    completions,
    completion_ids=None,
    *,
    tests_column: str = "tests",
    all_or_nothing: bool = False,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_workers: int | None = None,
    **columns,
) -> list[float | None]:
    """Per completion: passed / total of its row's tests (with ``all_or_nothing``: 1.0 only when
    all pass); None for a row without tests. ``timeout_s`` and ``memory_mb`` are per completion
    (see ``run_in_sandbox``); ``max_workers`` sandboxes run at once (default: the CPU count)."""
    rows = column(columns, tests_column, len(completions), reward="code")
    jobs = []
    for i, (completion, tests) in enumerate(zip(completions, rows)):
        if tests is None or len(tests) == 0:
            continue
        jobs.append((i, extract_code(completion_text(completion)), [tests] if isinstance(tests, str) else list(tests)))
    rewards: list[float | None] = [None] * len(completions)
    workers = max(1, min(len(jobs), max_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = pool.map(lambda job: run_tests(job[1], job[2], timeout_s=timeout_s, memory_mb=memory_mb), jobs)
        for (i, _, _), outcome in zip(jobs, outcomes):
            if all_or_nothing:
                rewards[i] = 1.0 if outcome.passed == outcome.total else 0.0
            else:
                rewards[i] = outcome.passed / outcome.total
    return rewards
