"""LoRA adapters through PEFT, for every method; QLoRA's 4-bit base preparation."""

from __future__ import annotations

import torch

from alignkit.atomic import atomic_directory
from alignkit.models.loading import quiet_peft
from alignkit.train.config import RunConfig


def apply_lora(model: torch.nn.Module, cfg: RunConfig, *, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with a LoRA adapter as ``cfg`` says; base weights are frozen by PEFT."""
    with quiet_peft():  # the first peft import is where bitsandbytes would warn
        from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha if cfg.lora_alpha is not None else 2 * cfg.lora_r,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type=task_type,
    )
    with quiet_peft():
        return get_peft_model(model, config)


def prepare_4bit_base(model: torch.nn.Module) -> torch.nn.Module:
    """Norms and embeddings to fp32 and input gradients on, so an adapter on a 4-bit base trains soundly."""
    with quiet_peft():
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def save_model(model, tokenizer, directory, *, merge: bool = False) -> None:
    """Save for ``from_pretrained``: full weights, the adapter alone, or adapter merged into the base.

    A sharded model (``--fsdp``) is saved from an unsharded copy gathered on the main process, in
    exactly the single-process format; every process calls this, only the main one writes."""
    from alignkit.models.sharding import gathered_copy, is_main_process, is_sharded

    if is_sharded(model):
        model = gathered_copy(model)
    if not is_main_process():
        return
    if is_peft(model) and merge:
        model = model.merge_and_unload()
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
