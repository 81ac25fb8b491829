"""A format check: a response must say something and must not loop."""

from __future__ import annotations


def format_problems(text: str) -> list[str]:
    """What is wrong with the shape of ``text``: ``"empty"`` when it is blank, and
    ``"repeated line: ..."`` for each non-blank line (compared after stripping) that occurs more
    than once — the signature of a degenerate, looping generation."""
    if not text.strip():
        return ["empty"]
    seen, problems = set(), []
    for line in (line.strip() for line in text.splitlines()):
        if not line:
            continue
        if line in seen and f"repeated line: {line}" not in problems:
            problems.append(f"repeated line: {line}")
        seen.add(line)
    return problems


def format_check(prompt, response: str) -> float:
    """1.0 when ``response`` has no format problem (see ``format_problems``), else 0.0.
    ``prompt`` is unused; it is there so the function fits ``fn(prompt, response)``."""
    return 0.0 if format_problems(response) else 1.0
