"""Unit tests of generated code, run in the sandbox."""

import functools

from alignkit.rewards import code_tests, extract_code, run_tests

SOLUTION = """Here is my solution:

```python
def add(a, b):
    print("debugging output the harness must ignore")
    return a + b

if __name__ == "__main__":
    input()  # would fail: the demo must not run
```
"""
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]


def test_extract_code_takes_the_last_python_block():
    text = "```bash\nls\n```\n```python\nx = 1\n```\nthen\n```py\nx = 2\n```"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\ny = 3\n```") == "y = 3\n"
    assert extract_code("def f(): pass") == "def f(): pass"  # no block: the whole text
    assert extract_code("```python\nx = 1\n```\n```text\nnot code\n```") == "x = 1\n"


def test_reward_is_the_fraction_of_tests_passed():
    completions = [SOLUTION, [{"role": "assistant", "content": "```python\ndef add(a, b):\n    return abs(a) + b\n```"}], "no tests", SOLUTION]
    tests = [TESTS, TESTS, None, "assert add(2, 3) == 5\nassert add(0, 0) == 0"]  # a string: one test program
    assert code_tests(["p"] * 4, completions, tests=tests, timeout_s=10) == [2 / 3, 1 / 3, None, 1.0]
    strict = functools.partial(code_tests, all_or_nothing=True, timeout_s=10)
    assert strict(["p"] * 2, [SOLUTION, SOLUTION], tests=[TESTS[:2], TESTS]) == [1.0, 0.0]


def test_broken_hanging_and_cheating_solutions_score_zero():
    tests = ["assert f() == 1", "assert f() == 1"]
    syntax_error = "```python\ndef f(:\n```"
    hangs = "```python\ndef f():\n    while True:\n        pass\n```"
    exits = "```python\nimport os\ndef f():\n    os._exit(0)\n```"  # exits before any report
    # Forged reports without the nonce, on stdout and on the harness's own report fd (3).
    fakes = "```python\nimport os\nprint('pass 0')\nos.write(3, b'nonce pass 0\\nnonce pass 1\\n')\ndef f():\n    return 0\n```"
    values = code_tests(["p"] * 4, [syntax_error, hangs, exits, fakes], tests=[tests] * 4, timeout_s=2)
    assert values == [0.0, 0.0, 0.0, 0.0]


def test_tests_reached_before_a_hang_still_count():
    code = "def f(x):\n    while x < 0:\n        pass\n    return x"
    outcome = run_tests(code, ["assert f(1) == 1", "assert f(-1) == -1", "assert f(2) == 2"], timeout_s=1.5)
    assert (outcome.passed, outcome.total, outcome.sandbox.timed_out) == (1, 3, True)
