"""The constitution judge: the LLM judge asked each principle's own question.

For every pair it asks one question per principle of the constitution (``Principle.comparison``,
e.g. "Which response is less harmful, ...?") with the same prompt and parser as ``LLMJudge``, all
in one batched backend call. P(a ≻ b) is the mean verdict over the principles that gave a
parseable answer (A = 1, B = 0, C = 0.5); NaN when none did. ``per_principle`` keeps each
principle's verdicts of the last call, and ``counts`` each principle's tallies, for reports.
"""

from __future__ import annotations

import math

from alignkit.judges.base import check_lengths
from alignkit.judges.llm import _VALUE, VerdictCounts, judge_messages, parse_verdict


class ConstitutionJudge:
    kind = "constitution"

    def __init__(self, backend, constitution, *, max_tokens: int = 8):
        self.backend = backend
        self.constitution = constitution
        self.max_tokens = max_tokens
        self.counts = {p.name: VerdictCounts() for p in constitution.principles}
        self.per_principle: dict[str, list[str | None]] = {}

    @property
    def name(self) -> str:
        return f"constitution:{self.constitution.name}:{self.backend.name}"

    def judge(self, prompts, responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        principles = self.constitution.principles
        conversations = [judge_messages(p, a, b, principle.comparison)
                         for principle in principles for p, a, b in zip(prompts, responses_a, responses_b)]
        replies = self.backend.chat(conversations, max_tokens=self.max_tokens, temperature=0.0)
        rows = len(prompts)
        self.per_principle = {}
        for k, principle in enumerate(principles):
            chunk = replies[k * rows : (k + 1) * rows]
            verdicts = [parse_verdict(r) for r in chunk]
            for verdict, reply in zip(verdicts, chunk):
                self.counts[principle.name].add(verdict, reply)
            self.per_principle[principle.name] = verdicts
        scores = []
        for i in range(rows):
            values = [_VALUE[v[i]] for v in self.per_principle.values() if v[i] is not None]
            scores.append(sum(values) / len(values) if values else math.nan)
        return scores
