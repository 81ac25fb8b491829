"""What every method does before its first step: load model + tokenizer, adapters, data."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from alignkit.train.config import RunConfig
from alignkit.train.lora import apply_lora, save_model

log = logging.getLogger(__name__)


def prepare_model(cfg: RunConfig, *, task_type: str = "CAUSAL_LM"):
    """(model, tokenizer) ready to train: dtype chosen, LoRA applied when ``cfg.lora_r`` is set."""
    from alignkit.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    torch.manual_seed(cfg.seed)
    model = load_policy(cfg.model, dtype=None if cfg.dtype == "auto" else cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.lora_r:
        model = apply_lora(model, cfg, task_type=task_type)
    return model, tokenizer


def data_files(spec: str) -> list[str]:
    """A bundled dataset name (``hhh``, ``hhh:test``) or a path, as a list of files."""
    from alignkit.datasets import bundled_files

    files = bundled_files(spec)
    return [str(f) for f in files] if files is not None else [spec]


def read_kind(spec: str, kind: str, cfg: RunConfig) -> list:
    from alignkit.data import read_records

    records = []
    for path in data_files(spec):
        result = read_records(path, kind, skip_invalid=cfg.skip_invalid)
        if result.n_invalid:
            log.warning("%s: skipped %d invalid rows (written to %s)", path, result.n_invalid, result.rejects_path)
        records.extend(result.records)
    return records


def load_encoded(spec: str, kind: str, tokenizer, cfg: RunConfig) -> list:
    """Read and tokenise ``spec`` as records of ``kind`` with the run's length limits."""
    from alignkit.data import encode_dataset

    if spec is None:
        raise ValueError("no training data: pass --data FILE (or --data hhh for the bundled set)")
    result = encode_dataset(
        tokenizer, read_kind(spec, kind, cfg), max_length=cfg.max_length,
        max_prompt_length=cfg.max_prompt_length, source_name=spec,
    )
    return list(result.items)


def load_pairs(spec: str, tokenizer, cfg: RunConfig) -> list:
    return load_encoded(spec, "preference", tokenizer, cfg)


def save_run_model(model, tokenizer, directory: Path, cfg: RunConfig) -> None:
    save_model(model, tokenizer, directory, merge=cfg.merge_lora)
