"""Sharded data parallelism with PyTorch FSDP2 (``fully_shard``), and what code that runs a sharded
model needs to know about it.

``shard(module)`` shards every Hugging Face model inside ``module`` (the policy; PPO's value model
too) across the processes of the default group: each decoder layer is one FSDP unit, and a small
root module (``ShardRoot``) owns what is left: embeddings, final norm, LM / score head (tied or
not). Parameters, gradients and AdamW's state then live 1/N on each process; a unit's full
weights exist only during its forward and backward (all-gathered, then freed)::

    forward   root: gather embed/norm/head ─ layer 0: gather, run, free ─ ... ─ selective head
    backward  layer L-1: gather, grads, reduce-scatter, free ─ ... ─ root: reduce-scatter

Why a root module of our own. The log-prob paths (``logprobs.py``, ``packing.py``, the scalar
heads) never call the model's ``forward``: they run the trunk (``get_decoder()``) for hidden
states and apply the head at a few positions. FSDP2 gathers the root unit's parameters in the
root's *forward* hook, so with the HF model as root the embeddings and head would stay sharded.
The alternative, unsharding and resharding the root by hand around each call, also has to
reproduce the gradient reduce-scatter the hook arranges. Instead ``ShardRoot.forward(fn, model,
...)`` just runs ``fn(model, ...)``: any such function becomes one forward of the root, with
every FSDP hook firing as for a plain ``model(...)``. Functions opt in with ``@one_forward``;
unsharded models call them directly.

The contract every caller keeps: each forward of a sharded model is a collective (its
all-gathers), so every process runs the same number of forwards in the same order. Offline
methods do by construction (equal micro-batches); online methods pad with ``idle`` forwards where
their row counts differ (``forward_count``).

Gradients: the loop's losses are each process's *share* of the global-batch loss, so the update
needs the *sum* over processes. FSDP2 averages by default; ``set_gradient_divide_factor(1.0)``
makes its reduce-scatter a sum, and with sum-only reductions forced the same path runs on gloo
(which has no pre-multiplied sum) and NCCL.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.distributed as dist


def _unwrap(model):
    from alignkit.models.logprobs import _unwrap

    return _unwrap(model)


class ShardRoot(torch.nn.Module):
    """The FSDP root of one sharded model: its forward runs ``fn(model, *args, **kwargs)``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model  # registered, so the parameters no layer owns belong to this unit

    def forward(self, fn, model, *args, **kwargs):
        out = fn(model, *args, **kwargs)
        # FSDP2 hooks the backward onto the root's outputs; an in-place op on an output that is a
        # view would bypass that hook (FSDP warns), so views leave as copies (they are small: (B,)).
        return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.clone() if t._is_view() else t, out)


def hf_models(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost transformers models inside ``module`` (under PEFT: the wrapped base model)."""
    from transformers import PreTrainedModel

    found: dict[str, torch.nn.Module] = {}
    for name, sub in module.named_modules():
        inside = any(name.startswith(f"{outer}.") or outer == "" for outer in found)
        if isinstance(sub, PreTrainedModel) and not inside:
            found[name] = sub
    return list(found.values())


def shard(module: torch.nn.Module) -> int:
    """Shard every transformers model inside ``module`` with FSDP2 over the default process group;
    returns how many. On CUDA parameters stay fp32 (the master copy AdamW updates) and compute runs
    in bf16 with gradients reduced in fp32; on CPU everything stays fp32."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    models = hf_models(module)
    for model in models:
        if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
            model.to(torch.cuda.current_device())  # NCCL shards GPU tensors only (a model a caller built on the CPU)
        cuda = next(model.parameters()).device.type == "cuda"
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if cuda
                  else MixedPrecisionPolicy())
        for embedding in model.modules():
            if isinstance(embedding, torch.nn.Embedding):
                # A sparse gradient (setup.sparse_tied_embedding_grad) cannot be reduce-scattered.
                embedding.sparse = False
        # The decoder layers, by the class names transformers lists as never to be split.
        layer_classes = set(getattr(model, "_no_split_modules", None) or [])
        layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
        if not layers:
            raise ValueError(f"--fsdp: {type(model).__name__} names no decoder layer class (_no_split_modules)")
        for layer in layers:
            fully_shard(layer, mp_policy=policy)
        root = ShardRoot(model)
        fully_shard(root, mp_policy=policy)
        for unit in root.modules():
            if isinstance(unit, FSDPModule):
                unit.set_gradient_divide_factor(1.0)  # a sum, not a mean: see the module docstring
                unit.set_force_sum_reduction_for_comms(True)
        # Kept on the model, outside nn.Module's registry: as a submodule the root (which holds the
        # model) would make the module tree a cycle.
        object.__setattr__(model, "_shard_root", root)
    return len(models)


def root_of(model) -> torch.nn.Module | None:
    """The ``ShardRoot`` of a sharded model (plain, PEFT-wrapped or DDP-wrapped), else None."""
    return getattr(_unwrap(model), "_shard_root", None)


def is_sharded(module) -> bool:
    """Whether ``module`` holds FSDP-sharded parameters (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def one_forward(fn):
    """Decorator for ``fn(model, ...)`` functions that run a model's parts (trunk, then a head):
    on a sharded model the call becomes one forward of its FSDP root (see the module docstring)."""

    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        root = root_of(model)
        if root is None:
            return fn(model, *args, **kwargs)
        out = root(fn, model, *args, **kwargs)
        if not torch.is_grad_enabled():
            # FSDP2 keeps the root's parameters gathered after its forward, for the backward that
            # follows. Without grad none follows: free them now, so an optimizer step in between
            # can never leave this gathered copy stale.
            root.reshard()
        return out

    return run


@contextlib.contextmanager
def full_weights(model):
    """Inside, every parameter of a sharded ``model`` is whole on every process (all-gathered: a
    collective, every process enters it); what engines that copy the weights read. No-op unsharded."""
    from torch.distributed.fsdp import FSDPModule

    root = root_of(model)
    units = [m for m in root.modules() if isinstance(m, FSDPModule)] if root is not None else []
    for unit in units:
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()


def forward_count(model, count: int) -> int:
    """How many forwards this process must run when it needs ``count``: the most any process
    needs when ``model`` is sharded (each forward is a collective), else ``count``."""
    if root_of(model) is None:
        return count
    most = torch.tensor([count], dtype=torch.long, device=next(model.parameters()).device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most)


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gathered_copy(model):
    """An unsharded copy of a sharded ``model`` on the main process's CPU (None on the others), to
    save as a single-process run would: built on the meta device (no memory, no initialisation),
    then given the full tensors gathered from every process. A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main_process():
        return None
    base = _unwrap(model)
    with torch.device("meta"):
        copy = type(base)(base.config)
        if hasattr(model, "peft_config"):  # the same adapter on the copy, so the state dict's names match
            from peft import get_peft_model

            copy = get_peft_model(copy, model.peft_config[model.active_adapter])
    copy.load_state_dict(state, assign=True)
    _unwrap(copy).tie_weights()  # a tied head is one tensor again, as save_pretrained expects
    if getattr(base, "generation_config", None) is not None:  # generative models only
        _unwrap(copy).generation_config = base.generation_config
    return copy
