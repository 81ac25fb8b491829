"""The one training loop every method shares.

A method supplies ``model`` (whose parameters that require grad are trained), ``train_items``,
``collate(items) -> batch``, ``loss(batch, totals=None) -> (scalar, metrics)``,
``evaluate() -> metrics`` and ``save(directory)``; optionally ``length(item)`` (for
length-grouped batches) and ``batch_totals(batch)``. The loop owns everything else: data order,
accumulation, all-reduce across processes, clipping, the fault guard (non-finite loss, gradient
or reward, loss spikes: ``guards.py``), schedule, checkpoints, resume (refused when the settings
or data changed: ``fingerprint.py``), logging and progress.

An *online* method (GRPO, PPO, ...) draws each step's items from its own rollout buffer, which
it refills from the current policy every few steps: it supplies ``step_items(step, topo)`` (this
process's items of optimizer step ``step``, possibly fewer than a full batch) and
``steps_per_epoch`` instead of a fixed ``train_items`` order, and ``state_dict()`` /
``load_state_dict(state)`` so that a checkpoint holds the buffer and resume is exact.

Exact reduction (``alignkit/losses/reduction.py``): before a step, the loop collates every
micro-batch and sums, over the whole global batch (all micro-batches, all processes), what the
losses divide by: ``examples`` always, plus whatever ``batch_totals(batch)`` returns (response
tokens for a token mean, KTO's KL sum, ...). ``loss(batch, totals)`` returns its micro-batch's
*share* of the global-batch loss (``sum / totals[...]``), and the loop sums gradients over
micro-batches and processes. So the update is the same however the batch is split, uneven
lengths included. Without ``totals`` (evaluation), ``loss`` is the plain mean over its batch.

Sharded (``--fsdp`` under torchrun / accelerate launch): the model, and a frozen reference copy,
are sharded with FSDP2 before the optimizer is built (``models/sharding.py``), so parameters,
gradients and optimizer state are 1/N per process. The gradient sum then happens inside backward
(FSDP's reduce-scatter, set to sum), the loop's all-reduce is skipped, and checkpoints and the
saved model are gathered to full tensors in the single-process format.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from alignkit.atomic import clean_stale
from alignkit.losses.reduction import sum_across_processes
from alignkit.train.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, read_trainer_state, save_checkpoint
from alignkit.train.config import RunConfig
from alignkit.train.fingerprint import check_resume, run_fingerprint
from alignkit.train.guards import NonFiniteLossError, StepGuard, non_finite_rewards  # noqa: F401 (re-exported)
from alignkit.train.logger import MetricsLogger
from alignkit.train.schedule import build_scheduler

log = logging.getLogger(__name__)


class Method(Protocol):
    model: torch.nn.Module
    train_items: Sequence

    def collate(self, items: list) -> Any: ...
    def loss(self, batch: Any, totals: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]: ...
    def evaluate(self) -> dict[str, float]: ...
    def save(self, directory: Path) -> None: ...


@dataclass
class Topology:
    """Which process this is and how many there are (1 without torchrun / accelerate launch)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Topology":
        """Joins the process group when launched by torchrun / accelerate launch (WORLD_SIZE > 1)."""
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            if torch.cuda.is_available():  # one GPU per process: NCCL and FSDP use the current device
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=2)  # computed once per epoch, not once per step
def epoch_order(n_items: int, epoch: int, seed: int, *, lengths: tuple[int, ...] | None = None, batch_size: int = 1,
                window: int = 16) -> tuple[int, ...]:
    """A fixed permutation per (seed, epoch), so resume and every process agree on the order.

    With ``lengths``, batches are length-grouped: inside each window of ``window`` batches the
    examples are sorted by length and cut into batches, then all full batches are shuffled. A
    batch then pads to a similar length instead of the longest of a random draw.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    if lengths is None or batch_size == 1:
        return tuple(order)  # immutable: the cached order is shared by every step of the epoch
    batches, leftover = [], []
    for start in range(0, n_items, window * batch_size):
        chunk = sorted(order[start : start + window * batch_size], key=lengths.__getitem__)
        for b in range(0, len(chunk), batch_size):
            (batches if len(chunk) - b >= batch_size else leftover).append(chunk[b : b + batch_size])
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return tuple(i for b in shuffled for i in batches[b]) + tuple(i for part in leftover for i in part)


def micro_batches(items: Sequence, step: int, cfg: RunConfig, topo: Topology, steps_per_epoch: int,
                  lengths: tuple[int, ...] | None = None) -> list[list]:
    """This process's micro-batches for optimizer step ``step`` (0-based).

    The global batch is ``cfg.batch_size`` examples; process r takes the r-th contiguous slice
    and splits it into ``cfg.grad_accum`` micro-batches.
    """
    epoch, position = divmod(step, steps_per_epoch)
    order = epoch_order(len(items), epoch, cfg.seed, lengths=lengths, batch_size=cfg.batch_size)
    global_ids = order[position * cfg.batch_size : (position + 1) * cfg.batch_size]
    per_rank = len(global_ids) // topo.world
    mine = global_ids[topo.rank * per_rank : (topo.rank + 1) * per_rank]
    size = len(mine) // cfg.grad_accum
    return [[items[i] for i in mine[k * size : (k + 1) * size]] for k in range(cfg.grad_accum)]


def split_items(items: Sequence, parts: int) -> list[list]:
    """``items`` cut into ``parts`` contiguous micro-batches of near-equal size (some may be empty)."""
    bounds = [round(k * len(items) / parts) for k in range(parts + 1)]
    return [list(items[bounds[k] : bounds[k + 1]]) for k in range(parts)]


def _any_process(flag: bool, topo: Topology) -> bool:
    if topo.world == 1:
        return flag
    return sum_across_processes({"flag": float(flag)})["flag"] > 0


def _sum_grads_across_processes(params: list[torch.Tensor], topo: Topology, sharded: bool) -> None:
    # Each process's gradient is already its share of the global-batch loss, so the sum over
    # processes is the full gradient (an explicit all-reduce, so any forward path syncs). Sharded,
    # FSDP's reduce-scatter in the backward has already summed them (models/sharding.py).
    if topo.world == 1 or sharded:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)


def global_totals(method: Method, micro: list[list], batches: list, topo: Topology) -> dict[str, float]:
    """What the losses of this step divide by, summed over the global batch: ``examples`` and the
    method's ``batch_totals`` over every micro-batch here, then over every process."""
    totals: dict[str, float] = {}
    for items, batch in zip(micro, batches):
        counts = {"examples": len(items), **(method.batch_totals(batch) if hasattr(method, "batch_totals") else {})}
        for key, value in counts.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return sum_across_processes(totals) if topo.world > 1 else totals


def _step_metrics(step_loss: float, sums: dict[str, float], counts: dict[str, int], topo: Topology) -> dict[str, float]:
    """The global-batch loss (the processes' shares added up) and each metric's mean over the
    micro-batches of every process that reported it (KTO reports rewards/chosen only for a batch
    with a thumbs-up example, so processes may hold different keys)."""
    keys = sorted(sums)
    if topo.world > 1:
        gathered: list = [None] * topo.world
        dist.all_gather_object(gathered, keys)
        keys = sorted(set().union(*gathered))
    reduced = sum_across_processes({"loss": step_loss, **{f"sum:{k}": sums.get(k, 0.0) for k in keys},
                                    **{f"n:{k}": counts.get(k, 0) for k in keys}})
    return {"loss": reduced["loss"], **{k: reduced[f"sum:{k}"] / reduced[f"n:{k}"] for k in keys}}


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients to a global L2 norm of at most ``max_norm``; returns the norm before.

    ``clip_grad_norm_`` in its two halves, so that sharded gradients (DTensors, ``--fsdp``) work:
    their norm is partial sums on each process until ``full_tensor()`` reduces it."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def build_optimizer(params, cfg: RunConfig, total_steps: int):
    # The fused kernel: one pass over each tensor instead of a dozen (on CPU, 6x faster than the default step).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    scheduler = build_scheduler(optimizer, cfg.lr_schedule, warmup=int(cfg.warmup_ratio * total_steps), total=total_steps)
    return optimizer, scheduler


def fit(method: Method, cfg: RunConfig) -> dict:
    """Train ``method`` as ``cfg`` says; return the summary (also written to summary.json)."""
    topo = Topology.current()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if topo.is_main:
        (out / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    online = hasattr(method, "step_items")  # items come from the method's rollout buffer
    steps_per_epoch = method.steps_per_epoch if online else len(method.train_items) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(method.train_items)} training examples is fewer than one batch of {cfg.batch_size}")
    if cfg.batch_size % (topo.world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must divide into {topo.world} processes × {cfg.grad_accum} micro-batches")
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))

    # Methods may say how long each example is (tokens) so batches can be length-grouped.
    lengths = tuple(method.length(item) for item in method.train_items) if hasattr(method, "length") else None
    sharded = shard_for_run(method, cfg, topo)
    params = [p for p in method.model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg, total_steps)
    ckpt_root = out / "checkpoints"
    if topo.is_main:
        clean_stale(ckpt_root)  # temporary directories of a run killed mid-save
        clean_stale(out)
        prune_checkpoints(ckpt_root, cfg.keep_checkpoints)
    fingerprint = run_fingerprint(cfg, len(method.train_items) if hasattr(method, "train_items") else None)
    guard = StepGuard(cfg.on_fault, cfg.loss_spike_zscore)
    start = 0
    if cfg.resume and list_checkpoints(ckpt_root):
        latest = list_checkpoints(ckpt_root)[-1]
        saved = read_trainer_state(latest)
        check_resume(saved.get("fingerprint"), fingerprint, latest)
        start = load_checkpoint(latest, method.model, optimizer, scheduler,
                                method=method if hasattr(method, "load_state_dict") else None)
        if "guard" in saved:
            guard.load_state_dict(saved["guard"])
        log.info("resumed from %s at step %d", latest, start)
        if topo.is_main:
            truncate_metrics(out / "metrics.jsonl", start)
    elif (out / "metrics.jsonl").exists() and topo.is_main:
        (out / "metrics.jsonl").unlink()  # a fresh run does not append to an old run's curve

    logger = MetricsLogger(out, report_to=cfg.report_to, config=cfg.model_dump(), enabled=topo.is_main)
    method.model.train()
    bar = tqdm(total=total_steps, initial=start, desc="train", disable=not topo.is_main, dynamic_ncols=True)
    last: dict[str, float] = {}
    on_start = _evaluate(method, logger, 0, cfg) if cfg.eval_on_start and start == 0 else None
    t0 = time.time()
    for step in range(start, total_steps):
        step_start = time.perf_counter()
        if online:
            micro = split_items(method.step_items(step, topo), cfg.grad_accum)
        else:
            micro = micro_batches(method.train_items, step, cfg, topo, steps_per_epoch, lengths)
        batches = [method.collate(items) for items in micro]
        totals = global_totals(method, micro, batches, topo)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        step_loss = 0.0  # this process's share of the global-batch loss
        bad_loss = None
        for batch in batches:
            with bf16_autocast(method, cfg):
                loss, metrics = method.loss(batch, totals)
            if not torch.isfinite(loss):
                bad_loss = loss.item()
                if not sharded:
                    break
                # Sharded, every backward is a collective: this process runs each one with the
                # others, and the non-finite gradients are dropped with the step below.
            loss.backward()
            step_loss += loss.item()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        # Every process learns of a fault anywhere, so all stop (or skip) together instead of
        # the others waiting forever in the gradient all-reduce.
        fault = None
        if _any_process(bad_loss is not None, topo):
            fault = f"loss is {bad_loss}" if bad_loss is not None else "non-finite loss on another process"
        reward_fault = non_finite_rewards(sums)
        if fault is None and _any_process(reward_fault is not None, topo):
            fault = reward_fault or "non-finite rewards on another process"
        if fault is None:
            _sum_grads_across_processes(params, topo, sharded)
            grad_norm = clip_gradients(params, cfg.max_grad_norm or float("inf"))
            if not torch.isfinite(grad_norm):  # the same on every process: gradients are summed
                fault = f"gradient norm is {grad_norm.item()}"
        if fault is None:
            step_metrics = _step_metrics(step_loss, sums, counts, topo)
            fault = guard.spike(step_metrics["loss"])
        done = step + 1
        if fault is not None:
            optimizer.zero_grad(set_to_none=True)
            guard.fault(done, fault, _newest(ckpt_root))  # raises unless on_fault="skip"
            with warnings.catch_warnings():  # a skipped first step calls it before any optimizer step: intended
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                scheduler.step()  # the schedule follows the step count, skipped steps included
            last = {"skipped_steps": guard.skipped}
        else:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            guard.good(step_metrics["loss"])
            last = step_metrics
            last.update(grad_norm=grad_norm.item(), lr=scheduler.get_last_lr()[0], epoch=done / steps_per_epoch,
                        **({"skipped_steps": guard.skipped} if guard.skipped else {}),
                        **{"time/step": time.perf_counter() - step_start})
        if done % cfg.log_every == 0 or done == total_steps:
            logger.log(last, step=done)
        bar.set_postfix({k: f"{last[k]:.4g}" for k in ("loss", "rewards/margins", "rewards/accuracies", "reward") if k in last})
        bar.update(1)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != total_steps:
            _evaluate(method, logger, done, cfg)
        if cfg.save_every and done % cfg.save_every == 0 and (topo.is_main or sharded):  # sharded: all gather
            save_checkpoint(ckpt_root, done, method.model, optimizer, scheduler, keep=cfg.keep_checkpoints,
                            method_state=method.state_dict() if hasattr(method, "state_dict") else None,
                            trainer_state={"fingerprint": fingerprint, "guard": guard.state_dict()})
    bar.close()

    final_eval = _evaluate(method, logger, total_steps, cfg)
    summary = {
        "steps": total_steps,
        "train_seconds": round(time.time() - t0, 2),
        "train": {k: v for k, v in last.items()},
        "eval": final_eval,
    }
    if on_start is not None:
        summary["eval_on_start"] = on_start
    if guard.skipped:
        summary["skipped_steps"] = guard.skipped
    if sharded:
        summary["fsdp_processes"] = topo.world
    if topo.is_main or sharded:  # sharded, every process takes part in gathering the weights
        method.save(out / "model")
    if topo.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.close()
    return summary


def shard_for_run(method: Method, cfg: RunConfig, topo: Topology) -> bool:
    """With ``--fsdp`` on several processes, shard the method's model (FSDP2, ``models/sharding.py``)
    before the optimizer sees its parameters, and a frozen reference copy too (``reference=copy``:
    as large as the policy, it would otherwise be whole on every process); returns whether it did."""
    if not cfg.fsdp:
        return False
    if topo.world == 1:
        log.warning("--fsdp on one process: nothing to shard, training unsharded "
                    "(launch with torchrun --nproc-per-node N or accelerate launch)")
        return False
    from alignkit.models.sharding import shard

    shard(method.model)
    frozen_reference = getattr(getattr(method, "reference", None), "frozen", None)
    if frozen_reference is not None:
        shard(frozen_reference)
    return True


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after ``step``: their weights were lost with the crash, resume redoes them.
    A row cut short by the kill is not JSON: it goes too."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if _step_of(line) is not None and _step_of(line) <= step]
        path.write_text("".join(r + "\n" for r in rows))


def _step_of(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def bf16_autocast(method: Method, cfg: RunConfig):
    """torch.autocast(bfloat16) on the model's device when ``cfg.bf16_autocast``, else a no-op."""
    device = next(method.model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.bf16_autocast)


def _evaluate(method: Method, logger: MetricsLogger, step: int, cfg: RunConfig) -> dict[str, float]:
    method.model.eval()
    with torch.no_grad(), bf16_autocast(method, cfg):
        metrics = {f"eval/{k}": v for k, v in method.evaluate().items()}
    method.model.train()
    if metrics:
        logger.log(metrics, step=step)
    return metrics


def _newest(root: Path) -> str:
    found = list_checkpoints(root)
    return str(found[-1]) if found else "none"
