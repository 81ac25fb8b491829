"""A trained scalar-head reward model as a reward function, with its own tokenizer and template.

The policy and the reward model rarely share a tokenizer or a chat template, so the policy's
token ids are never fed to the reward model: each (prompt, completion) is turned back into
messages — ``prompt messages + completion messages`` — and re-encoded with the reward model's
own tokenizer and chat template, the shape it was trained on. The score is read at the last
attended token (``alignkit.models.heads.sequence_scores``); rows are batched, sorted by length
(less padding) and scored once when identical (GRPO groups often repeat a completion).
"""

from __future__ import annotations

from alignkit.rewards.protocol import completion_messages, prompt_messages


def encode_conversation(tokenizer, prompt, completion, *, chat_template: str | None = None) -> list[int]:
    """Token ids of the prompt followed by the completion (end-of-turn included), through
    ``tokenizer``'s chat template (or ``chat_template``). Each may be a string or messages."""
    messages = prompt_messages(prompt) + completion_messages(completion)
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, chat_template=chat_template)
    return list(encoded["input_ids"])


def score_sequences(model, sequences: list[list[int]], *, pad_token_id: int, batch_size: int = 8) -> list[float]:
    """The scalar score of each token sequence, in batches of right-padded rows."""
    import torch

    from alignkit.models.heads import sequence_scores

    unique = sorted({tuple(s) for s in sequences}, key=len)
    device = next(model.parameters()).device
    scores: dict[tuple[int, ...], float] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(unique), batch_size):
                chunk = unique[start : start + batch_size]
                width = len(chunk[-1])  # sorted by length: the last is the longest
                input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, sequence in enumerate(chunk):
                    input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
                    attention_mask[row, : len(sequence)] = 1
                values = sequence_scores(model, input_ids.to(device), attention_mask.to(device))  # (B,)
                scores.update(zip(chunk, values.tolist()))
    finally:
        model.train(was_training)
    return [scores[tuple(s)] for s in sequences]


class RewardModelReward:
    """r(x, y) of a scalar-head model (``AutoModelForSequenceClassification``, one label), as a
    reward function. ``tokenizer`` is the reward model's; ``chat_template`` overrides its
    template; ``name`` is how a ``RewardSet`` logs it."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, chat_template: str | None = None, name: str = "reward_model"):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.chat_template = chat_template
        self.name = name

    @classmethod
    def from_pretrained(cls, path, *, dtype=None, **options) -> "RewardModelReward":
        """A reward model saved by ``alignkit rm`` (or TRL's RewardTrainer) and its tokenizer."""
        from alignkit.models.heads import load_scalar_model

        model, tokenizer = load_scalar_model(path, dtype=dtype)
        return cls(model, tokenizer, **options)

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        # completion_ids are the policy's tokens: meaningless to this model, so unused.
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        sequences = [
            encode_conversation(self.tokenizer, p, c, chat_template=self.chat_template) for p, c in zip(prompts, completions)
        ]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return score_sequences(self.model, sequences, pad_token_id=pad, batch_size=self.batch_size)
