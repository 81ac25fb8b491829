"""Every training method by name: the one table the CLI, YAML recipes and Python API derive from.

A method is a typed config class (a ``RunConfig`` subclass) and a runner ``run(cfg) -> summary``.
From this table:

* ``alignkit <name>`` exists, with one flag per config field (``--beta``, ``--label-smoothing``,
  ...), the field's docstring as its help and ``Literal[...]`` fields as choices (``alignkit/cli.py``);
* a recipe stage ``method: <name>`` takes any field of the config (``alignkit/pipeline.py``);
* Python calls ``run_method("dpo", beta=0.2, data="pairs.jsonl")``, or the config class and runner
  directly: ``run_dpo(DPOConfig(...))``.

Adding a method (PPO, GRPO, RLOO, ...) is two steps and no CLI code:

1. In ``alignkit/train/<name>.py``, a config with one field per setting and a one-line docstring
   under each field (it becomes the ``--flag`` help; Literal types become choices)::

       class GRPOConfig(RunConfig):
           \"\"\"A GRPO run.\"\"\"

           group_size: int = Field(8, ge=2)
           \"\"\"Completions sampled per prompt (G).\"\"\"
           loss_type: Literal[tuple(GRPO_LOSS_TYPES)] = "dapo"
           \"\"\"Aggregation of the per-token losses: a name in alignkit.losses.GRPO_LOSS_TYPES.\"\"\"

   and a runner, usually ``def run_grpo(cfg): return fit(build_grpo(cfg), cfg)``.
2. One line in :data:`METHODS` below (or ``register(...)`` from your own code before the CLI is
   built): ``"grpo": MethodSpec(GRPOConfig, run_grpo, "Group-relative policy optimisation ...")``.

Then ``alignkit grpo --group-size 16 --config run.yaml``, ``method: grpo`` in a recipe and
``run_method("grpo", ...)`` all work, and a new field is a new flag without touching the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alignkit.train.config import RunConfig
from alignkit.train.dpo import DPOConfig, run_dpo
from alignkit.train.grpo import GRPOConfig, run_grpo
from alignkit.train.kto import KTOConfig, run_kto
from alignkit.train.online_dpo import OnlineDPOConfig, run_online_dpo
from alignkit.train.ppo import PPOConfig, run_ppo
from alignkit.train.prm import PRMConfig, run_prm
from alignkit.train.rloo import RLOOConfig, run_rloo
from alignkit.train.rm import RMConfig, run_rm
from alignkit.train.sft import SFTConfig, run_sft


@dataclass(frozen=True)
class MethodSpec:
    """How to configure and run one training method."""

    config: type[RunConfig]
    """The typed config: every field is a CLI flag, a recipe key and a keyword argument."""
    run: Callable[[RunConfig], dict]
    """Trains as the config says and returns the run's summary (also written to summary.json)."""
    summary: str
    """One line for ``alignkit --help``."""


METHODS: dict[str, MethodSpec] = {
    "sft": MethodSpec(SFTConfig, run_sft, "Supervised fine-tuning on demonstrations (loss on response tokens only)."),
    "rm": MethodSpec(RMConfig, run_rm, "Bradley-Terry reward model: a scalar head on the LM, trained on preference pairs."),
    "dpo": MethodSpec(DPOConfig, run_dpo, "Direct preference optimisation and its family (IPO, cDPO, hinge, RPO, SimPO, ORPO)."),
    "kto": MethodSpec(KTOConfig, run_kto, "KTO on unpaired thumbs-up / thumbs-down feedback."),
    "grpo": MethodSpec(GRPOConfig, run_grpo, "GRPO / RLVR: G samples per prompt, group-relative advantages, verifiable rewards."),
    "ppo": MethodSpec(PPOConfig, run_ppo, "PPO-RLHF: policy, reference, reward (functions or a reward model) and value; KL-penalised reward, GAE."),
    "prm": MethodSpec(PRMConfig, run_prm, "Process reward model: a score after every step of a solution (per-step BCE); --label-mode final: the ORM."),
    "rloo": MethodSpec(RLOOConfig, run_rloo, "RLOO: k samples per prompt, leave-one-out baseline, KL-penalised reward; no value model."),
    "online-dpo": MethodSpec(OnlineDPOConfig, run_online_dpo, "Online / iterative DPO: pairs sampled from the policy each round, labelled by rewards or a judge."),
}


def register(name: str, config: type[RunConfig], run: Callable[[RunConfig], dict], summary: str) -> MethodSpec:
    """Add a method to :data:`METHODS` (call it before ``alignkit.cli`` is imported for a CLI command)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    if not (isinstance(config, type) and issubclass(config, RunConfig)):
        raise TypeError(f"{name}: the config must be a RunConfig subclass, got {config!r}")
    METHODS[name] = MethodSpec(config, run, summary)
    return METHODS[name]


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def run_method(name: str, config_file: str | None = None, **fields) -> dict:
    """Train method ``name`` from an optional YAML file and keyword fields (which win over the file)."""
    from alignkit.train.config import load_config

    spec = get_method(name)
    return spec.run(load_config(spec.config, config_file, **fields))
