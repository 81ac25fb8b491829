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

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """The reward r(x, y) of each (prompt, response)."""
        from alignkit.models.heads import sequence_scores
        from alignkit.train.collate import pad_sequences

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        sequences = [encode_conversation(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        scores: list[float] = []
        try:
            for start in range(0, len(sequences), self.batch_size):
                chunk = sequences[start : start + self.batch_size]
                batch = pad_sequences(chunk, [0] * len(chunk), self.tokenizer.pad_token_id)  # right-padded
                rewards = sequence_scores(self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
                scores.extend(rewards.tolist())
        finally:
            self.model.train(was_training)
        return scores

    def judge(self, prompts: list[list[dict]], responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        return preference_from_scores(self.score(prompts, responses_a), self.score(prompts, responses_b))
