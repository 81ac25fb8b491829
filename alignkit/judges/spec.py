"""``--judge SPEC``: one string names a judge of any kind.

    runs/rm/model                     a reward model directory (its config is *ForSequenceClassification)
    smollm2-135m-instruct, runs/x/model
                                      a chat model in this process, as the pairwise LLM judge
    http://127.0.0.1:8000/v1          an OpenAI-compatible endpoint as the LLM judge; the model is
    http://host/v1#model-id           the one after '#', else the first the endpoint lists
    rm:PATH | llm:SPEC                force the kind when the guess would be wrong
    constitution:SPEC                 the constitution judge on the chat model / endpoint SPEC

Endpoint keys come from the environment variable ``api_key_env`` (none by default: a local
``alignkit serve`` without a key); replies are cached under ``cache_dir``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def is_reward_model(path: str) -> bool:
    """True when ``path`` holds a sequence-classification (scalar-head) model."""
    from alignkit.models.loading import resolve_model_path

    config = Path(resolve_model_path(path)) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def chat_backend(spec: str, *, api_key_env: str | None = None, cache_dir: str | os.PathLike | None = None, dtype=None,
                 **engine_options):
    """A ``LocalChat`` for a model spec, an ``OpenAIChat`` for an http(s) URL."""
    from alignkit.judges.chat import LocalChat, OpenAIChat

    if spec.startswith(("http://", "https://")):
        base_url, _, model = spec.partition("#")
        if not model:
            model = _first_model(base_url, api_key_env)
        return OpenAIChat(base_url, model, api_key_env=api_key_env, cache_dir=cache_dir)
    return LocalChat.load(spec, dtype=dtype, **engine_options)


def _first_model(base_url: str, api_key_env: str | None) -> str:
    import openai

    key = os.environ.get(api_key_env, "") if api_key_env else "not-needed"
    models = openai.OpenAI(base_url=base_url, api_key=key or "not-needed", max_retries=2, timeout=30).models.list().data
    if not models:
        raise ValueError(f"{base_url} lists no models: name one as {base_url}#MODEL")
    return models[0].id


def load_judge(spec: str, *, api_key_env: str | None = None, cache_dir: str | os.PathLike | None = None,
               constitution: str = "hhh", dtype=None):
    """The judge a ``--judge`` string names (see the module doc); a local model loads in ``dtype``
    (default: ``default_placement``'s)."""
    from alignkit.judges.llm import LLMJudge

    kind, _, rest = spec.partition(":")
    if kind in ("rm", "llm", "constitution") and rest:
        spec = rest
    elif spec.startswith(("http://", "https://")):
        kind = "llm"
    else:
        kind = "rm" if is_reward_model(spec) else "llm"
    if kind == "rm":
        from alignkit.judges.reward_model import RewardModelJudge

        return RewardModelJudge.from_path(spec, dtype=dtype)
    backend = chat_backend(spec, api_key_env=api_key_env, cache_dir=cache_dir, dtype=dtype)
    if kind == "constitution":
        from alignkit.cai.constitution import load_constitution
        from alignkit.judges.constitution import ConstitutionJudge

        return ConstitutionJudge(backend, load_constitution(constitution))
    return LLMJudge(backend)
