"""Math final answers checked against a reference answer with ``math-verify``.

math-verify (Hugging Face) extracts the final answer from free text — ``\\boxed{...}`` first,
then LaTeX or plain expressions such as "the answer is 3/4" — parses it with SymPy and compares
symbolically and numerically, so ``\\frac{3}{4}``, ``3/4`` and ``0.75`` agree and ``1,000``
equals ``1000``. It is the verifier of open-r1 and TRL's ``accuracy_reward``; writing our own
regex-and-float comparison would be worse at exactly the cases (fractions, LaTeX) that matter.
"""

from __future__ import annotations

import threading

from alignkit.rewards.protocol import column, completion_text

ANSWER_COLUMNS = ("answer", "solution")


def math_answer(
    prompts, completions, completion_ids=None, *, answer_column: str | None = None, timeout_s: int = 5, **columns
) -> list[float | None]:
    """1.0 when a completion's final answer equals the row's reference answer, else 0.0; None
    for a row whose reference is missing or cannot be parsed (nothing to check against).

    ``answer_column``: the dataset column holding the reference (default: ``answer``, else
    ``solution``). A GSM8K-style reference "…reasoning… #### 72" is cut to what follows the
    last ``####``. ``timeout_s``: per parse / comparison (math-verify's SIGALRM timer, which only
    works in the main thread; elsewhere no timer is set).
    """
    from math_verify import parse, verify

    name = answer_column or next((c for c in ANSWER_COLUMNS if c in columns), ANSWER_COLUMNS[0])
    references = column(columns, name, len(completions), reward="math")
    timeout = timeout_s if threading.current_thread() is threading.main_thread() else None
    rewards: list[float | None] = []
    for completion, reference in zip(completions, references):
        gold = _parse_reference(parse, reference, timeout)
        if not gold:
            rewards.append(None)
            continue
        answer = parse(completion_text(completion), parsing_timeout=timeout)
        rewards.append(1.0 if answer and verify(gold, answer, timeout_seconds=timeout) else 0.0)
    return rewards


def _parse_reference(parse, reference, timeout):
    if reference is None:
        return []
    text = str(reference)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    if not text:
        return []
    # A bare expression with variables ("x+1") only parses as LaTeX math.
    return parse(text, parsing_timeout=timeout) or parse(f"${text}$", parsing_timeout=timeout)
