"""Typed run configuration shared by every training command, YAML recipe and the Python API.

One field, one line of docstring. The CLI flags (`--max-steps`, `--lr`, ...) are generated from
these fields, with the docstring as the flag's help (``use_attribute_docstrings``), and YAML keys
map onto the same names (dashes become underscores), so a user learns the convention once. A
method's config subclasses :class:`RunConfig`; see ``alignkit/train/registry.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)


class RunConfig(BaseModel):
    """Settings every method shares: model, data, loop, checkpoints, adapters, logging."""

    # use_attribute_docstrings: the docstring under each field becomes its description (the CLI help).
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)

    model: str = "smollm2-135m-instruct"
    """Local HF directory, hub id, or bundled alias to start from."""
    data: str | None = None
    """Training data file (JSONL/JSON/CSV/Parquet) or the bundled name `hhh`."""
    data_format: Literal["auto", "trl", "hh-rlhf", "ultrafeedback"] = "auto"
    """Schema of preference files: auto = recognised from the first row; trl, hh-rlhf or ultrafeedback to insist."""
    eval_data: str | None = None
    """Held-out data in the same format; evaluated every `eval_every` steps and at the end."""
    output_dir: str = "runs/latest"
    """Run directory: model, config, metrics.jsonl, summary.json, checkpoints/."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps to run; overrides `epochs` when set."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data when `max_steps` is not set."""
    batch_size: int = Field(4, ge=1)
    """Examples per optimizer step (the global batch, split across processes and accumulation)."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches accumulated into one optimizer step (micro-batch = batch_size / grad_accum / processes)."""
    lr: float = Field(5e-6, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of steps spent on linear warm-up."""
    lr_schedule: Literal["cosine", "linear", "constant"] = "linear"
    """Decay after warm-up."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this value (None: no clipping)."""
    seed: int = 0
    """Seeds Python, NumPy and torch, and the data order."""
    max_length: int = Field(512, ge=8)
    """Prompt + response tokens kept per sequence (the prompt's end is kept when cutting)."""
    max_prompt_length: int | None = None
    """Prompt tokens kept (default: half of max_length)."""
    max_completion_length: int | None = Field(None, ge=1)
    """Response tokens kept, from the start (None: what max_length leaves). A response cut short has
    no end-of-turn token, so training on a few tokens teaches how answers open (whether to refuse)
    without teaching the model to stop early."""
    max_examples: int | None = Field(None, ge=1)
    """Train on a seeded random sample of this many examples (None: all)."""
    skip_invalid: bool = False
    """Skip malformed rows (counted and written to a rejects file) instead of stopping."""
    eval_every: int | None = Field(None, ge=1)
    """Evaluate every N optimizer steps (None: only at the end)."""
    eval_on_start: bool = False
    """Evaluate before the first step too (logged at step 0, in summary.json as eval_on_start): the baseline."""
    save_every: int | None = Field(None, ge=1)
    """Write a resumable checkpoint every N optimizer steps (None: only the final model)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many recent checkpoints to keep on disk."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir/checkpoints."""
    log_every: int = Field(1, ge=1)
    """Log metrics every N optimizer steps."""
    report_to: list[Literal["tensorboard", "trackio", "mlflow", "wandb"]] = []
    """Extra trackers besides the always-written metrics.jsonl."""
    trainable_layers: int | None = Field(None, ge=1)
    """Train only the last N decoder layers, the final norm and any head other than the tied embedding
    (e.g. a reward model's score head); None trains all. Backward stops after those layers."""
    lora_r: int | None = Field(None, ge=1)
    """Train a LoRA adapter of this rank instead of all weights (PEFT)."""
    lora_alpha: float | None = None
    """LoRA scaling alpha (default: 2 × r)."""
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Modules that get adapters: attention and MLP projections by default."""
    merge_lora: bool = False
    """Save the merged full model instead of the adapter at the end."""
    load_in_4bit: bool = False
    """QLoRA: hold the frozen base in 4-bit NF4 (bitsandbytes) and train the LoRA adapter on it."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: auto = bf16 on CUDA, fp32 on CPU."""
    bf16_autocast: bool = False
    """Run forward passes under torch.autocast in bfloat16 while weights, gradients and optimizer
    state stay in their dtype: matmuls in bf16 where the hardware has it (GPUs; CPUs with AVX512_BF16
    or AMX: 1.4x faster SFT steps on a 2-core AVX512_BF16 EPYC). Numbers change slightly, so off by default."""
    keep_freed_memory: bool = True
    """CPU training: keep up to 1 GiB of freed memory for the next step's tensors instead of returning
    it to the OS (train/allocator.py): 8 % faster full fine-tune steps. Off, the quickstart's SFT stage
    peaked 0.12 GB lower (2.86 GB) for 1 % more time."""
    threads: int | None = None
    """torch intra-op threads (default: torch's choice)."""
    fsdp: bool = False
    """Under torchrun / accelerate launch, shard weights, gradients and optimizer state across the processes (PyTorch FSDP2; docs/scaling.md)."""
    trust_remote_code: bool = False
    """Allow model code from the hub to run (off unless asked; warns when on)."""
    on_fault: Literal["stop", "skip"] = "stop"
    """A step with a non-finite loss, gradient or reward, or a loss spike: stop with weights intact, or skip it and count it."""
    loss_spike_zscore: float | None = Field(None, gt=0)
    """Treat a loss this many standard deviations above the last 50 steps' mean as a fault (None: off)."""

    @model_validator(mode="after")
    def _check(self):
        if self.trust_remote_code:
            log.warning("trust_remote_code is on: Python code shipped with %s will run on this machine; "
                        "use it only for a model whose code you have read or whose author you trust", self.model)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}")
        if self.trainable_layers and self.lora_r:
            raise ValueError("trainable_layers trains whole layers and lora_r adapters on every layer: set one of them")
        if self.load_in_4bit and not self.lora_r:
            raise ValueError("load_in_4bit trains a LoRA adapter on a frozen 4-bit base: set lora_r too")
        if self.load_in_4bit and self.merge_lora:
            # Merging into NF4 weights re-quantises them; the adapter applies to the full-precision base.
            raise ValueError("merge_lora with load_in_4bit would save re-quantised weights: save the adapter "
                             "and load it on the full-precision base (load_policy on the run's model/ does that)")
        if self.fsdp and self.load_in_4bit:
            raise ValueError("fsdp with load_in_4bit: FSDP2 cannot shard bitsandbytes 4-bit weights; use one or the other")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length={self.max_prompt_length} must be < max_length={self.max_length}")
        return self


def load_config(cls: type[RunConfig], path: str | Path | None = None, **overrides) -> RunConfig:
    """Build ``cls`` from a YAML file, then ``overrides`` (CLI flags) on top; errors name the file.

    An override of None means "not given" (the file's or the default value stays)."""
    values = read_config_file(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(cls, values, path)


def read_config_file(path: str | Path) -> dict:
    """The field: value mapping of a YAML config file (dashes in keys become underscores)."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of field: value")
    for key in loaded:
        if not isinstance(key, str):  # YAML reads `0:` or `true:` as a number or a bool
            raise ConfigError(f"{path}: field names are text, got {key!r}")
    return {k.replace("-", "_"): v for k, v in loaded.items()}


def make_config(cls: type[RunConfig], values: dict, path: str | Path | None = None) -> RunConfig:
    """Validate ``values`` as ``cls``; a :class:`ConfigError` names the file (if any) and each bad field."""
    try:
        return cls(**values)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        # Checks across fields have no location: their message names the fields itself.
        lines = [f"{where}field '{'.'.join(map(str, e['loc']))}': {e['msg']}" if e["loc"] else f"{where}{e['msg']}"
                 for e in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


class ConfigError(ValueError):
    """A config file or flag that cannot be used; the message names the file and field."""
