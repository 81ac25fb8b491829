"""Generation engines: batched Hugging Face generation with a KV cache."""

from alignkit.rollout.generate import Generation, encode_prompt, generate

__all__ = ["Generation", "encode_prompt", "generate"]
