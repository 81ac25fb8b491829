"""What every method does before its first step: load model + tokenizer, adapters, data."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from alignkit.train.allocator import reuse_freed_memory
from alignkit.train.config import RunConfig
from alignkit.train.lora import apply_lora, prepare_4bit_base, save_model

log = logging.getLogger(__name__)


def prepare_model(cfg: RunConfig, *, task_type: str = "CAUSAL_LM"):
    """(model, tokenizer) ready to train: dtype chosen, LoRA applied when ``cfg.lora_r`` is set, on a
    4-bit base when ``cfg.load_in_4bit`` (QLoRA), all but the last ``cfg.trainable_layers`` frozen
    when that is set; on CPU, freed memory kept for reuse unless ``cfg.keep_freed_memory`` is off
    (``allocator.py``)."""
    from alignkit.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    torch.manual_seed(cfg.seed)
    model = load_policy(cfg.model, dtype=weights_dtype(cfg), trust_remote_code=cfg.trust_remote_code,
                        load_in_4bit=cfg.load_in_4bit)
    if cfg.load_in_4bit:
        model = prepare_4bit_base(model)
    if cfg.lora_r:
        model = apply_lora(model, cfg, task_type=task_type)
    if cfg.trainable_layers:
        train_only_last_layers(model, cfg.trainable_layers)
    sparse_tied_embedding_grad(model)
    if cfg.keep_freed_memory and next(model.parameters()).device.type == "cpu":
        reuse_freed_memory()
    return model, tokenizer


def weights_dtype(cfg: RunConfig) -> str | None:
    """The dtype to load trained weights in; None lets the loader choose (bf16 on CUDA, fp32 on CPU).
    With --fsdp, fp32: the sharded fp32 weights are the master copy AdamW updates, and FSDP's mixed
    precision computes in bf16 on CUDA (models/sharding.py)."""
    if cfg.dtype != "auto":
        return cfg.dtype
    return "float32" if cfg.fsdp else None


def sparse_tied_embedding_grad(model) -> bool:
    """Let a trainable input embedding that shares its weight with the LM head emit sparse gradients.

    Dense, the embedding's gradient is a zero-filled [vocab × hidden] matrix (113 MB for
    SmolLM2) with a few hundred non-zero rows, which is then added to the head's gradient.
    Sparse, only those rows are added into the head's dense gradient, so ``weight.grad`` is the
    same dense tensor AdamW and clipping always see. An untied embedding keeps dense gradients:
    its ``.grad`` would stay sparse, which fused AdamW rejects. Returns whether it switched.
    """
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = isinstance(embedding, torch.nn.Embedding) and head is not None and embedding.weight is head.weight
    if tied and embedding.weight.requires_grad:
        embedding.sparse = True
    return tied and embedding.sparse


def data_files(spec: str) -> list[str]:
    """A bundled dataset name (``hhh``, ``hhh:test``) or a path, as a list of files."""
    from alignkit.datasets import bundled_files

    files = bundled_files(spec)
    return [str(f) for f in files] if files is not None else [spec]


def hub_loaders() -> dict:
    """Hub datasets with a known schema, addressable as ``HUB_ID[:split]`` (needs the hub or its cache)."""
    from alignkit.data import adapters

    return {adapters.ULTRAFEEDBACK_ID: adapters.load_ultrafeedback_binarized, adapters.HH_RLHF_ID: adapters.load_hh_rlhf}


def read_kind(spec: str, kind: str, cfg: RunConfig) -> list:
    """Records of ``kind`` from a file, a bundled dataset, or a known hub dataset.

    SFT on preference data trains on the chosen responses (the DPO lab's warm-up).
    """
    from alignkit.data import DataError, PreferencePair, SFTExample, read_records

    hub_id, _, split = spec.partition(":")
    if hub_id in hub_loaders():
        results = [hub_loaders()[hub_id](split, skip_invalid=cfg.skip_invalid) if split else hub_loaders()[hub_id](skip_invalid=cfg.skip_invalid)]
    else:
        results = [read_records(path, "preference" if kind == "sft" and _is_pairs(path, cfg.data_format) else kind,
                                data_format=cfg.data_format, skip_invalid=cfg.skip_invalid) for path in data_files(spec)]
    records = []
    for result in results:
        if result.n_invalid:
            log.warning("skipped %d invalid rows (written to %s)", result.n_invalid, result.rejects_path)
        records.extend(result.records)
    if not records:  # every row skipped: say so here, not as "fewer than one batch" later
        raise DataError(f"no valid rows ({sum(r.n_invalid for r in results)} skipped as invalid)", source=spec)
    if kind == "sft":
        records = [SFTExample(r.prompt, r.chosen, meta=r.meta) if isinstance(r, PreferencePair) else r for r in records]
    return records


def _is_pairs(path: str, data_format: str) -> bool:
    """Whether a file holds preference pairs: a public schema always does; otherwise its first row
    has chosen and rejected."""
    from alignkit.data.detect import first_row

    row = first_row(path) if data_format in ("auto", "trl") else {}
    return data_format not in ("auto", "trl") or (row is not None and "chosen" in row and "rejected" in row)


def load_encoded(spec: str, kind: str, tokenizer, cfg: RunConfig) -> list:
    """Read and tokenise ``spec`` as records of ``kind`` with the run's length limits."""
    from alignkit.data import encode_dataset

    if spec is None:
        raise ValueError("no training data: pass --data FILE (or --data hhh for the bundled set)")
    result = encode_dataset(
        tokenizer, read_kind(spec, kind, cfg), max_length=cfg.max_length,
        max_prompt_length=cfg.max_prompt_length, max_completion_length=cfg.max_completion_length, source_name=spec,
    )
    return list(result.items)


def load_pairs(spec: str, tokenizer, cfg: RunConfig) -> list:
    return load_encoded(spec, "preference", tokenizer, cfg)


def sample_examples(items: list, cfg: RunConfig) -> list:
    """A seeded random subset of ``cfg.max_examples`` items (all of them when unset or larger)."""
    if cfg.max_examples is None or cfg.max_examples >= len(items):
        return items
    generator = torch.Generator().manual_seed(cfg.seed)
    keep = torch.randperm(len(items), generator=generator)[: cfg.max_examples].sort().values
    log.info("training on a sample of %d of %d examples", cfg.max_examples, len(items))
    return [items[i] for i in keep.tolist()]


def save_run_model(model, tokenizer, directory: Path, cfg: RunConfig) -> None:
    save_model(model, tokenizer, directory, merge=cfg.merge_lora)


def train_only_last_layers(model: torch.nn.Module, n_layers: int) -> None:
    """Freeze everything but the last ``n_layers`` decoder layers, the final norm and any head
    that is not the (tied) input embedding — backward then stops after those layers."""
    from alignkit.models.logprobs import _unwrap

    base = _unwrap(model)
    trunk = getattr(base, base.base_model_prefix)
    base.requires_grad_(False)
    for module in [*trunk.layers[-n_layers:], trunk.norm]:
        module.requires_grad_(True)
    for name, module in base.named_children():
        if module is not trunk and name != "lm_head":
            module.requires_grad_(True)  # e.g. the reward model's score head
