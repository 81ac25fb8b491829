"""The weights a policy actually applies, read without changing it: LoRA deltas added in.

Engines that keep their own copy of the policy (the static-cache decoder, vLLM) take these after
every optimizer step. Reading W + scaling·B·A, rather than merging into the model and unmerging,
leaves the trained base weights bit-for-bit untouched however often weights are synced.
"""

from __future__ import annotations

import torch


def effective_weight(linear) -> torch.Tensor:
    """The weight a (possibly LoRA-wrapped) linear layer applies: W + Σ scaling·B·A over its
    active, unmerged adapters."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight
    weight = base.weight
    if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
        return weight
    for name in linear.active_adapters:
        if name in getattr(linear, "lora_A", {}):
            weight = weight + linear.get_delta_weight(name)
    return weight


def effective_bias(linear) -> torch.Tensor | None:
    return getattr(linear, "base_layer", linear).bias


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The plain model's state dict (Hugging Face names, no ``base_layer`` / ``lora_`` entries)
    with every LoRA-wrapped layer's weight replaced by its effective weight."""
    from alignkit.rollout.cpu_engine import plain_model

    base = plain_model(model)
    state: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            state[f"{name}.weight"] = effective_weight(module).detach()
            if module.base_layer.bias is not None:
                state[f"{name}.bias"] = module.base_layer.bias.detach()
    for name, tensor in _module_tensors(base).items():
        if "lora_" in name or ".base_layer." in name:
            continue
        state.setdefault(name, tensor)
    return state


def _module_tensors(module) -> dict[str, torch.Tensor]:
    """What ``module.state_dict()`` holds (parameters and persistent buffers, tied ones under each
    name), read from the modules themselves: inside ``sharding.full_weights`` these are the
    gathered tensors, while ``state_dict()`` hands back a sharded model's shards."""
    out = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        tensors = [*sub._parameters.items(),
                   *((n, b) for n, b in sub._buffers.items() if n not in sub._non_persistent_buffers_set)]
        for name, tensor in tensors:
            if tensor is not None:
                out.setdefault(f"{prefix}.{name}" if prefix else name, tensor.detach())
    return out
