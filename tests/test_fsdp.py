"""--fsdp: FSDP2-sharded training on 2 CPU processes (torchrun, gloo) computes what one unsharded
process does: the same per-step losses, gradient norms and saved weights, for SFT, DPO (full and
LoRA), reward models (outcome and process) and KTO. The online methods (GRPO, PPO, RLOO, online
DPO) the same as their unsharded 2-process runs: each process samples its own share of the
rollouts, so a 1-process run samples other completions. A sharded run's checkpoint resumes,
sharded or on one process.

All sharded runs share one torchrun launch (``fsdp_worker.py``: start-up is most of the cost on
two cores); the unsharded reference runs are made in this process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.train.logger import read_metrics
from alignkit.train.registry import METHODS, run_method
from tests.test_distributed import LAUNCHERS

ROOT = Path(__file__).resolve().parent.parent
FIX = "tests/fixtures"


def token_parity(prompts, completions, completion_ids=None, **columns):
    """A reward that varies inside a group of samples from a random model: 1 for an even token sum."""
    return [float(sum(ids) % 2 == 0) for ids in completion_ids]


def signal_on_rank_1(prompts, completions, completion_ids=None, **columns):
    """Rank 0: equal rewards, so its groups are dropped and it has no rows; rank 1: 0, 1, 0, 1."""
    rank_1 = os.environ.get("RANK", "0") == "1"
    return [float(i % 2) if rank_1 else 1.0 for i in range(len(completions))]


def _runs(tiny: str) -> dict[str, tuple[str, dict]]:
    """name -> (method, config fields): each is run sharded (2 processes) and unsharded (1 process)."""
    # A constant learning rate: a linear decay reaches 0 at the last step, which would then hide a
    # resumed run's missing optimizer state.
    common = dict(model=tiny, batch_size=4, max_steps=3, lr=1e-3, warmup_ratio=0.0, lr_schedule="constant",
                  threads=1, seed=1)
    return {
        "sft": ("sft", common | dict(data=f"{FIX}/sft_messages.jsonl")),
        # grad_accum 2: one pair per micro-batch per process, each backward reduce-scattered; the
        # reference a frozen copy, sharded too
        "dpo": ("dpo", common | dict(data=f"{FIX}/pairs_conversational.jsonl", grad_accum=2, loss="rpo",
                                     reference="copy")),
        # the reference is the adapter-free base: forwards of the sharded model without grad
        "dpo-lora": ("dpo", common | dict(data=f"{FIX}/pairs_conversational.jsonl", lora_r=4, lr=1e-2,
                                          reference="adapter")),
        "sft-lora-merged": ("sft", common | dict(data=f"{FIX}/sft_messages.jsonl", lora_r=4, lr=1e-2, merge_lora=True)),
        "rm": ("rm", common | dict(data=f"{FIX}/pairs_conversational.jsonl")),
        "prm": ("prm", common | dict(data="arith-steps", max_examples=8)),
        "kto": ("kto", common | dict(data=f"{FIX}/kto.jsonl")),
    }


def _online_runs(tiny: str) -> dict[str, tuple[str, dict]]:
    """name -> (method, config fields): each is run on 2 processes, sharded and unsharded."""
    common = dict(model=tiny, prompts=f"{FIX}/prompts.jsonl", reward=["tests.test_fsdp:token_parity"], max_new_tokens=5,
                  lr=1e-2, warmup_ratio=0.0, seed=3, rollout_dtype="float32", max_steps=2, threads=1)
    return {
        # Rank 0 keeps no rows: it trains on empty micro-batches, rank 1 on all of its rows.
        "grpo": ("grpo", common | dict(reward=["tests.test_fsdp:signal_on_rank_1"], num_generations=4, batch_size=8)),
        # π_old and a LoRA reference (β > 0) scored by the sharded model on 0 rows here, 8 there.
        "grpo-lora": ("grpo", common | dict(reward=["tests.test_fsdp:signal_on_rank_1"], num_generations=4,
                                            batch_size=8, lora_r=4, beta=0.04, steps_per_generation=2)),
        "ppo": ("ppo", common | dict(batch_size=2, num_mini_batches=2, ppo_epochs=1)),  # policy and value model
        "rloo": ("rloo", common | dict(batch_size=4, num_mini_batches=1, ppo_epochs=1, num_generations=2)),
        "online-dpo": ("online-dpo", common | dict(batch_size=2, num_generations=2, lr=1e-3)),
    }


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_dir):
    """Every sharded run, in one torchrun launch: (output root, the launch's stderr)."""
    out = tmp_path_factory.mktemp("fsdp")
    spec = [{"method": method, "fields": fields | dict(output_dir=str(out / name), fsdp=True)}
            for name, (method, fields) in _runs(tiny_dir).items()]
    # Resume: a sharded SFT run checkpoints at step 2; a second launch of the same run resumes there.
    resume = _runs(tiny_dir)["sft"][1] | dict(output_dir=str(out / "resumed"), fsdp=True, save_every=2)
    spec += [{"method": "sft", "fields": resume}, {"method": "sft", "fields": resume | dict(resume=True)}]
    # Online methods: sharded and unsharded (the loop's explicit all-reduce) on the same 2 processes.
    spec += [{"method": method, "fields": fields | dict(output_dir=str(out / f"{name}-{mode}"), fsdp=fsdp)}
             for name, (method, fields) in _online_runs(tiny_dir).items()
             for mode, fsdp in (("sharded", True), ("all-reduce", False))]
    spec.append({"check": "engines", "output": str(out / "engines.json")})
    spec.append({"check": "nan", "output_dir": str(out / "nan")})
    (out / "spec.json").write_text(json.dumps(spec))
    stderr = _launch(out / "spec.json")
    return out, stderr


def _launch(spec: Path, launcher: str = "torchrun") -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*LAUNCHERS[launcher], "tests/fsdp_worker.py", str(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)  # a process left out of a collective hangs
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, tiny_dir):
    """The same runs on one process without --fsdp, made on demand: name -> output directory."""
    out, done = tmp_path_factory.mktemp("one"), {}

    def get(name: str) -> Path:
        if name not in done:
            method, fields = _runs(tiny_dir)[name]
            run_method(method, **fields, output_dir=str(out / name))
            done[name] = out / name
        return done[name]

    return get


def _losses(run: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run / "metrics.jsonl") if "loss" in row]


def _grad_norms(run: Path) -> list[float]:
    # Compared as well as the losses: AdamW after clipping barely sees a gradient scaled by the
    # number of processes (a mean where a sum is due), the logged norm does.
    return [row["grad_norm"] for row in read_metrics(run / "metrics.jsonl") if "grad_norm" in row]


def _saved(run: Path) -> dict[str, torch.Tensor]:
    files = sorted((run / "model").glob("*.safetensors"))
    assert files, f"nothing saved in {run / 'model'}"
    return {name: tensor for f in files for name, tensor in load_file(f).items()}


def _assert_same_run(sharded: Path, single: Path) -> None:
    assert json.loads((sharded / "summary.json").read_text())["fsdp_processes"] == 2
    assert len(_losses(sharded)) == 3
    assert _losses(sharded) == pytest.approx(_losses(single), rel=1e-5, abs=1e-6)
    # The norm sums 3M squared elements in another order (dense vs sparse embedding gradient, per
    # shard): seen 1e-5 relative apart; a reduction bug is a factor of the process count.
    assert _grad_norms(sharded) == pytest.approx(_grad_norms(single), rel=1e-4)
    _assert_same_weights(_saved(sharded), _saved(single))


def _assert_same_weights(a: dict, b: dict) -> None:
    # AdamW divides each gradient element by its own running RMS, so an element whose gradient is
    # ~0 moves by up to ~lr on summation-order round-off alone (seen: 2e-5 at lr 1e-3, reward
    # model); the tolerance is a tenth of such a step. A wrong reduction shows in the norms above.
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.allclose(a[name], b[name], atol=1e-4), name


@pytest.mark.parametrize("name", ["sft", "dpo", "dpo-lora", "sft-lora-merged", "rm", "prm", "kto"])
def test_sharded_run_matches_one_process(launched, unsharded, name):
    out, _ = launched
    _assert_same_run(out / name, unsharded(name))


def test_lora_run_saves_the_adapter_and_a_merged_model_as_one_process_does(launched):
    out, _ = launched
    assert (out / "dpo-lora" / "model" / "adapter_config.json").exists()
    assert all("lora_" in name for name in _saved(out / "dpo-lora"))
    merged = _saved(out / "sft-lora-merged")
    assert not any("lora_" in name for name in merged) and "model.layers.0.self_attn.q_proj.weight" in merged


def test_sharded_checkpoint_resumes_sharded_and_on_one_process(launched, unsharded, tmp_path):
    out, stderr = launched
    resumed = out / "resumed"
    assert f"resumed from {resumed / 'checkpoints' / 'step-2'} at step 2" in stderr
    _assert_same_run(resumed, unsharded("sft"))
    # The checkpoint holds full tensors in the single-process layout: an unsharded run continues it.
    shutil.copytree(resumed / "checkpoints", tmp_path / "checkpoints")
    method, fields = _runs(str(Path(json.loads((resumed / "config.json").read_text())["model"])))["sft"]
    run_method(method, **fields, output_dir=str(tmp_path), save_every=2, resume=True)
    assert _losses(tmp_path)[-1] == pytest.approx(_losses(unsharded("sft"))[-1], rel=1e-5)
    _assert_same_weights(_saved(tmp_path), _saved(unsharded("sft")))


@pytest.mark.parametrize("name", ["grpo", "grpo-lora", "ppo", "rloo", "online-dpo"])
def test_online_sharded_run_matches_its_unsharded_run(launched, name):
    out, _ = launched
    sharded, plain = out / f"{name}-sharded", out / f"{name}-all-reduce"
    assert json.loads((sharded / "summary.json").read_text())["fsdp_processes"] == 2
    rows = [r for r in read_metrics(sharded / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 2 and rows[0]["grad_norm"] > 0  # the rewards varied: something was learnt
    if name.startswith("grpo"):
        assert rows[0]["zero_std_groups"] == 0.5  # every group of one process was dropped
    assert _losses(sharded) == pytest.approx(_losses(plain), rel=1e-5, abs=1e-6)
    assert _grad_norms(sharded) == pytest.approx(_grad_norms(plain), rel=1e-4)
    _assert_same_weights(_saved(sharded), _saved(plain))


def test_engines_sync_whole_weights_and_the_reference_copy_is_sharded(launched):
    out, _ = launched
    result = json.loads((out / "engines.json").read_text())
    assert result["same_names"] and result["max_diff"] < 1e-6  # what vLLM's load_weights is given
    assert "--fsdp shards" in result["hf_engine"]  # refused, where generate() would hang
    assert result["reference_sharded"]  # reference=copy: sharded with the policy, not whole everywhere


def test_a_nan_loss_on_one_process_is_skipped_by_every_process(launched):
    # Process 1's loss is NaN from its second micro-batch on (steps 1 to 3 have two each): every
    # process joins every backward (each a collective) and all skip the step; nothing hangs.
    out, _ = launched
    summary = json.loads((out / "nan" / "summary.json").read_text())
    assert summary["skipped_steps"] == 3 and summary["fsdp_processes"] == 2


def test_fsdp_is_a_flag_of_every_training_command():
    from alignkit.cli import config_options

    for name, spec in METHODS.items():
        assert any("--fsdp" in option.opts for option in config_options(spec.config)), name


@pytest.mark.slow  # two more launches (7-15 s each on two cores); the runs above cover the computation
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_cli_command_of_docs_scaling(tmp_path, tiny_dir, unsharded, launcher):
    """`torchrun ... -m alignkit.cli sft --fsdp ...` and `accelerate launch ... -m alignkit.cli sft
    --fsdp ...`, as docs/scaling.md gives them, train what one process does."""
    fields = _runs(tiny_dir)["sft"][1] | dict(output_dir=str(tmp_path / "run"))
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in fields.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*LAUNCHERS[launcher], "-m", "alignkit.cli", "sft", "--fsdp", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_same_run(tmp_path / "run", unsharded("sft"))
