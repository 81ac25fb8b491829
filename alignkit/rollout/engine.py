"""The rollout-engine interface every online method, the evaluator and the server use, and the
choice of engine for the hardware at hand.

    engine = make_engine(model, tokenizer)              # vLLM on CUDA when installed, else the CPU engine
    rollouts = engine.generate(prompts, n=4, max_new_tokens=64, temperature=1.0, seed=0)
    ...optimizer step on model...
    engine.load_weights(model)                          # engines that keep their own copy of the weights

Prompts are chat message lists (encoded with the tokenizer's chat template and generation
prompt), plain strings (tokenized as they are: continuation) or token-id lists.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from alignkit.rollout.rollouts import FinishReason, Rollouts

Prompt = list[dict] | str | list[int]


class RolloutEngine(Protocol):
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
        """n samples per prompt (temperature 0: greedy), grouped by prompt; see ``Rollouts``."""
        ...

    def load_weights(self, model) -> None:
        """Take the current weights of ``model`` (a no-op for engines that sample from it directly)."""
        ...


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of one prompt: chat messages through the template (ending with the assistant
    header), a string through the tokenizer, token ids as they are."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    return list(tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return {i for i in ids if i is not None}


class StopStrings:
    """Detects user stop strings in a growing completion and cuts the text before the first match
    (as vLLM and the OpenAI API do). Decodes only a short tail of tokens per check."""

    def __init__(self, tokenizer, stop: Sequence[str] | None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.window = max((len(s) for s in self.stop), default=0) + 2  # tokens: each is ≥ 1 char (or a byte of one)

    def hit(self, completion_ids: list[int]) -> bool:
        if not self.stop:
            return False
        tail = self.tokenizer.decode(completion_ids[-self.window :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def cut(self, text: str) -> str:
        ends = [text.find(s) for s in self.stop if s in text]
        return text[: min(ends)] if ends else text


def check_options(*, n: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")


def finish_reason(token: int, completion: list[int], stop_ids: set[int], stops: StopStrings, max_new_tokens: int) -> FinishReason | None:
    """Why a row that just sampled ``token`` (already appended to ``completion``) ends, or None."""
    if token in stop_ids:
        return "eos"
    if stops.hit(completion):
        return "stop"
    if len(completion) >= max_new_tokens:
        return "length"
    return None


def make_engine(model, tokenizer, *, backend: str = "auto", **options) -> RolloutEngine:
    """The engine for this model and machine.

    backend "auto": vLLM when the model is on CUDA and ``vllm`` is importable; else the static-cache
    CPU engine when the architecture is supported (``decoder.supports``); else ``generate``.
    "vllm", "static" and "hf" force one. ``options`` go to the engine's constructor.
    """
    from alignkit.rollout.cpu_engine import StaticCacheEngine, plain_model
    from alignkit.rollout.decoder import supports
    from alignkit.rollout.hf_engine import HFEngine

    if backend == "auto":
        on_cuda = next(model.parameters()).device.type == "cuda"
        if on_cuda and _vllm_available():
            backend = "vllm"
        elif supports(plain_model(model)):
            backend = "static"
        else:
            backend = "hf"
    if backend == "vllm":
        from alignkit.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model, tokenizer, **options)
    if backend == "static":
        return StaticCacheEngine(model, tokenizer, **options)
    if backend == "hf":
        return HFEngine(model, tokenizer, **options)
    raise ValueError(f"unknown rollout backend {backend!r}: choose auto, vllm, static or hf")


def _vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
