"""vLLM as the rollout engine on GPU, colocated: it runs inside the training process and shares its
GPU, and ``load_weights`` pushes the policy's current weights (LoRA merged) into it by reference.

Written against vLLM's documented offline API (``LLM``, ``SamplingParams``, ``LLM.apply_model``)
and run in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so weights are not serialised. NOT YET
PROVEN ON A GPU: no GPU was available when this was written; the tests run with vLLM absent and
check the pieces that do not need it (weight merging, option mapping, finish reasons).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from alignkit.rollout.engine import Prompt, check_options, encode_prompt
from alignkit.rollout.rollouts import Rollouts
from alignkit.rollout.weights import merged_state_dict


def sampling_params_kwargs(*, n: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int, stop, seed: int) -> dict:
    """Our options in vLLM's ``SamplingParams`` terms; ``logprobs=0`` returns the sampled token's own."""
    return dict(n=n, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else -1,
                stop=list(stop) if stop else None, seed=seed, logprobs=0)


def finish_reason(output) -> str:
    """vLLM's (finish_reason, stop_reason) as ours: "length"; "stop" for a stop string; else "eos"."""
    if output.finish_reason == "length":
        return "length"
    return "stop" if isinstance(output.stop_reason, str) else "eos"


class VLLMEngine:
    """``model`` must have a local directory (``name_or_path``) vLLM can read the config from.

    ``gpu_memory_utilization``: the share of GPU memory vLLM may take (weights + KV cache); the rest
    stays for training. The sampling log-probs are vLLM's "processed" ones (after temperature),
    the same quantity as the CPU engine's when top-p = 1 and top-k = 0.
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 256, dtype=None, gpu_memory_utilization: float = 0.3, **llm_kwargs):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: load_weights by reference
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("the vLLM engine needs `pip install vllm` on a CUDA machine; use backend='static' or 'hf' elsewhere") from exc
        from alignkit.rollout.cpu_engine import plain_model

        path = plain_model(model).config.name_or_path
        self.tokenizer = tokenizer
        self.llm = LLM(model=path, tokenizer=path, max_num_seqs=max_batch, gpu_memory_utilization=gpu_memory_utilization,
                       dtype=dtype or "auto", enable_prefix_caching=True, logprobs_mode="processed_logprobs", **llm_kwargs)
        self.load_weights(model)

    def load_weights(self, model) -> None:
        from alignkit.models.sharding import full_weights

        with full_weights(model):  # sharded (--fsdp): every process gathers the whole model for its engine
            weights = list(merged_state_dict(model).items())
        self.llm.apply_model(lambda vllm_model: vllm_model.load_weights(weights))
        self.llm.reset_prefix_cache()  # cached prompt keys/values were computed with the old weights

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Rollouts:
        from vllm import SamplingParams

        check_options(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        params = SamplingParams(**sampling_params_kwargs(n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                                         top_p=top_p, top_k=top_k, stop=stop, seed=seed))
        start = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=progress)
        rows = [(i, sample) for i, request in enumerate(outputs) for sample in request.outputs]
        return Rollouts(
            prompt_ids=[encoded[i] for i, _ in rows],
            completion_ids=[list(s.token_ids) for _, s in rows],
            logprobs=[[step[token].logprob for token, step in zip(s.token_ids, s.logprobs)] for _, s in rows],
            finish_reasons=[finish_reason(s) for _, s in rows],
            texts=[s.text for _, s in rows],
            prompt_index=[i for i, _ in rows],
            n=n,
            timings={"generate": time.perf_counter() - start},
        )
