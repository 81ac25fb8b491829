"""Rollout engines: sample from a policy with per-token log-probs and finish reasons.

``make_engine`` picks vLLM on CUDA (when installed), the static-cache continuous-batching engine
for Llama-family models elsewhere, and Hugging Face ``generate`` for anything else.
``generate`` (greedy or sampled, one completion per chat prompt) is the evaluator's entry point.
"""

from alignkit.rollout.cpu_engine import StaticCacheEngine
from alignkit.rollout.engine import RolloutEngine, encode_prompt, make_engine
from alignkit.rollout.generate import Generation, generate
from alignkit.rollout.hf_engine import HFEngine
from alignkit.rollout.rollouts import Rollouts

__all__ = ["Generation", "HFEngine", "RolloutEngine", "Rollouts", "StaticCacheEngine", "encode_prompt", "generate", "make_engine"]
