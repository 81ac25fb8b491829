"""A judge from a scalar-head reward model: P(a ≻ b) = σ(r(x, a) − r(x, b)) (Bradley-Terry).

Each response is scored as the full conversation ``prompt messages + {"role": "assistant",
"content": response}`` through the tokenizer's chat template — the same shape a reward model
is trained on — at the last attended token (``alignkit.models.heads.sequence_scores``).
"""

from __future__ import annotations

import torch

from alignkit.judges.base import check_lengths, preference_from_scores


def encode_conversation(tokenizer, prompt: list[dict], response: str) -> list[int]:
    """Token ids of the prompt messages followed by the assistant's response (end-of-turn included)."""
    messages = list(prompt) + [{"role": "assistant", "content": response}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


class RewardModelJudge:
    def __init__(self, model, tokenizer, *, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # A pointwise model gives the same r(x, y) whichever side y is shown on, and evaluation
        # asks for both orders and then the mean reward: score each conversation once.
        self._cache: dict[tuple[int, ...], float] = {}

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """The reward r(x, y) of each (prompt, response)."""
        from alignkit.models.heads import sequence_scores
        from alignkit.train.collate import pad_sequences

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        sequences = [tuple(encode_conversation(self.tokenizer, p, r)) for p, r in zip(prompts, responses)]
        todo = sorted({s for s in sequences if s not in self._cache}, key=len)  # sorted: less padding
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                batch = pad_sequences([list(c) for c in chunk], [0] * len(chunk), self.tokenizer.pad_token_id)
                rewards = sequence_scores(self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
                self._cache.update(zip(chunk, rewards.tolist()))
        finally:
            self.model.train(was_training)
        return [self._cache[s] for s in sequences]

    def judge(self, prompts: list[list[dict]], responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        return preference_from_scores(self.score(prompts, responses_a), self.score(prompts, responses_b))
