"""A format check: a completion must say something, must not loop, and (optionally) must match
a required layout such as ``<think>...</think><answer>...</answer>``."""

from __future__ import annotations

import re

from alignkit.rewards.protocol import completion_text


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


def format_check(prompts, completions, completion_ids=None, *, pattern: str | None = None, **columns) -> list[float]:
    """1.0 per completion with no format problem (see ``format_problems``) that also, when
    ``pattern`` is given, matches it in full (``re.fullmatch``, DOTALL, surrounding whitespace
    stripped); else 0.0. E.g. DeepSeek-R1's layout:
    ``partial(format_check, pattern=r"<think>.*?</think>\\s*<answer>.*?</answer>")``."""
    regex = re.compile(pattern, re.DOTALL) if pattern is not None else None
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        ok = not format_problems(text) and (regex is None or regex.fullmatch(text.strip()) is not None)
        rewards.append(1.0 if ok else 0.0)
    return rewards
