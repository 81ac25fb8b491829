"""A judge from a scalar-head reward model: P(a ≻ b) = σ(r(x, a) − r(x, b)) (Bradley-Terry).

Each response is scored as the full conversation ``prompt messages + {"role": "assistant",
"content": response}`` through the tokenizer's chat template — the same shape a reward model
is trained on — at the last attended token (``alignkit.models.heads.sequence_scores``).
"""

from __future__ import annotations

from alignkit.judges.base import check_lengths, preference_from_scores
from alignkit.rewards.reward_model import encode_conversation, score_sequences


class RewardModelJudge:
    order_invariant = True
    """P(a ≻ b) = 1 − P(b ≻ a) exactly: asking in both orders measures nothing (reports say so)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8):
        self._model = model
        self._path: str | None = None  # where a lazy judge (from_path) loads its model from
        self._dtype = None  # and in what (None: the placement default)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # A pointwise model gives the same r(x, y) whichever side y is shown on, and evaluation
        # asks for both orders and then the mean reward: score each conversation once.
        self._cache: dict[tuple[int, ...], float] = {}

    @classmethod
    def from_path(cls, path: str, *, dtype=None, **kwargs) -> RewardModelJudge:
        """A judge that loads its model (in ``dtype``, default: ``default_placement``'s) at the
        first score: an evaluation then generates before it holds the judge in memory too."""
        from alignkit.models import load_tokenizer

        judge = cls(None, load_tokenizer(path), **kwargs)
        judge._path, judge._dtype = path, dtype
        return judge

    @property
    def model(self):
        if self._model is None:
            from alignkit.models.heads import load_scalar_model

            self._model = load_scalar_model(self._path, dtype=self._dtype)[0].eval()
        return self._model

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """The reward r(x, y) of each (prompt, response)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        sequences = [tuple(encode_conversation(self.tokenizer, p, r)) for p, r in zip(prompts, responses)]
        todo = [list(s) for s in dict.fromkeys(sequences) if s not in self._cache]
        if todo:
            scores = score_sequences(self.model, todo, pad_token_id=self.tokenizer.pad_token_id, batch_size=self.batch_size)
            self._cache.update(zip(map(tuple, todo), scores))
        return [self._cache[s] for s in sequences]

    def judge(self, prompts: list[list[dict]], responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        return preference_from_scores(self.score(prompts, responses_a), self.score(prompts, responses_b))
