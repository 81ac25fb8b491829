"""The constitution judge: the LLM judge asked each principle's own question.

For every pair it asks one question per principle of the constitution (``Principle.comparison``,
e.g. "Which response is less harmful, ...?") with the same prompt as ``LLMJudge``, all in one
batched backend call, each read the way ``verdict`` says (``alignkit.judges.llm``: by default
P(a ≻ b) = (P(A) + ½·P(C)) / (P(A) + P(B) + P(C)) from the first reply token). P(a ≻ b) is the
mean over the principles whose call was decided; NaN when none was. ``per_principle`` keeps each
principle's values of the last call (NaN: undecided), and ``counts`` each principle's tallies,
for reports.
"""

from __future__ import annotations

import math

from alignkit.judges.base import check_lengths
from alignkit.judges.llm import MIN_LETTER_MASS, VERDICTS, Verdict, VerdictCounts, judge_messages


class ConstitutionJudge:
    kind = "constitution"

    def __init__(self, backend, constitution, *, verdict: Verdict = "probability", min_letter_mass: float = MIN_LETTER_MASS,
                 max_tokens: int = 8):
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {sorted(VERDICTS)}, got {verdict!r}")
        self.backend = backend
        self.constitution = constitution
        self.verdict, self.min_letter_mass, self.max_tokens = verdict, min_letter_mass, max_tokens
        self.counts = {p.name: VerdictCounts() for p in constitution.principles}
        self.per_principle: dict[str, list[float]] = {}

    @property
    def name(self) -> str:
        return f"constitution:{self.constitution.name}:{self.backend.name}"

    def judge(self, prompts, responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        principles = self.constitution.principles
        rows = len(prompts)
        conversations = [judge_messages(p, a, b, principle.comparison)
                         for principle in principles for p, a, b in zip(prompts, responses_a, responses_b)]
        tallies = [self.counts[principle.name] for principle in principles for _ in range(rows)]
        values = VERDICTS[self.verdict](self.backend, conversations, tallies, max_tokens=self.max_tokens,
                                        min_letter_mass=self.min_letter_mass)
        self.per_principle = {principle.name: values[k * rows : (k + 1) * rows] for k, principle in enumerate(principles)}
        scores = []
        for i in range(rows):
            decided = [v[i] for v in self.per_principle.values() if not math.isnan(v[i])]
            scores.append(sum(decided) / len(decided) if decided else math.nan)
        return scores
