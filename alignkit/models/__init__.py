"""Model loading, scalar heads and log-prob computation."""

from alignkit.models.loading import alignkit_home, load_policy, load_tokenizer, resolve_model_path
from alignkit.models.logprobs import response_token_logps, sequence_logps
from alignkit.models.tiny import save_tiny_model, tiny_model

__all__ = [
    "alignkit_home",
    "load_policy",
    "load_tokenizer",
    "resolve_model_path",
    "response_token_logps",
    "save_tiny_model",
    "sequence_logps",
    "tiny_model",
]
