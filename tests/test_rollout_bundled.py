"""The rollout engine on the bundled SmolLM2-135M-Instruct: greedy answers equal Hugging Face
``generate``'s and sampling log-probs equal a teacher-forced forward.

Slow (loads the 135M model); run with `bash scripts/test.sh --slow`.
"""

import json
from importlib import resources

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled():
    from alignkit.models.loading import load_policy, load_tokenizer

    return load_policy("smollm2-135m-instruct").eval(), load_tokenizer("smollm2-135m-instruct")


def held_out_prompts(count: int) -> list[list[dict]]:
    rows = []
    for name in ("helpful", "harmless", "honest"):
        path = resources.files("alignkit.datasets") / "hhh" / f"{name}.test.jsonl"
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]
    return [[{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"] for row in rows]


def test_greedy_answers_equal_generate_on_held_out_prompts(bundled):
    from alignkit.rollout import StaticCacheEngine
    from alignkit.rollout.engine import encode_prompt

    model, tokenizer = bundled
    prompts = held_out_prompts(4)
    rollouts = StaticCacheEngine(model, tokenizer, dtype=torch.float32, max_batch=8).generate(prompts, max_new_tokens=48, temperature=0)
    for prompt, completion in zip(prompts, rollouts.completion_ids):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=48, do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        assert completion == out[0, ids.shape[1] :].tolist()


def test_sampling_logprobs_equal_a_forward_pass(bundled):
    from alignkit.rollout import StaticCacheEngine

    model, tokenizer = bundled
    rollouts = StaticCacheEngine(model, tokenizer, dtype=torch.float32, max_batch=4).generate(held_out_prompts(2), n=2, max_new_tokens=24, seed=0)
    batch = rollouts.to_batch(tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["response_mask"][:, 1:].bool()
    torch.testing.assert_close(batch["logprobs"][:, 1:][mask], logps[mask], atol=1e-4, rtol=0)
