"""Parity of alignkit.losses with TRL 1.16.0 (test-only dependency).

Every test executes TRL's own code. Where TRL's math sits inside a trainer method, the method is called
unbound with a ``types.SimpleNamespace`` standing in for ``self`` (only the attributes it reads) and a
stand-in model that returns fixed log-probs / logits, so TRL's reductions, length normalisation and
metrics run for real. The expected values are never re-typed from TRL's formulas here.
"""

import functools
import math
import os
from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402
from trl.trainer.reward_trainer import RewardTrainer  # noqa: E402
from trl.trainer.rloo_trainer import RLOOTrainer  # noqa: E402

from alignkit.losses import (  # noqa: E402
    bradley_terry_loss,
    call_preference_loss,
    cdpo_loss,
    group_advantages,
    grpo_loss,
    kto_kl_reference,
    kto_loss,
    orpo_loss,
    rloo_advantages,
    simpo_loss,
)

ATOL = 1e-6
VOCAB = 11


class _Accelerator:
    """Single-process stand-in for accelerate.Accelerator: gathers and reductions are identities."""

    device = torch.device("cpu")
    num_processes = 1
    process_index = 0
    sync_gradients = True

    def gather(self, tensor):
        return tensor

    gather_for_metrics = gather

    def reduce(self, tensor, reduction="sum"):
        return tensor

    def autocast(self):
        return nullcontext()

    def unwrap_model(self, model):
        return model


def _metrics_store():
    return defaultdict(lambda: defaultdict(list))


def _close(ours, theirs):
    assert torch.allclose(torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(theirs, dtype=torch.float64),
                          atol=ATOL, rtol=0), (ours, theirs)


# --- a fused-LM-head stand-in for DPOTrainer / KTOTrainer ----------------------------------------------


class _TableLM:
    """Mimics ``model(..., labels=..., fused_lm_head=True)``: the log-prob of token v is ``table[v]``.

    Returns per-token log-probs of the shifted labels (0 where label == -100), as the fused head does.
    """

    training = True
    is_gradient_checkpointing = False

    def __init__(self, table):
        self.table = table

    def __call__(self, input_ids=None, labels=None, **_):
        shifted = labels[:, 1:]
        log_probs = torch.where(shifted != -100, self.table[input_ids[:, 1:]], torch.zeros(()))
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros_like(log_probs, dtype=torch.bool), log_sum_sq_probs=zeros)


def _sequences(generator, rows, prompt_len, response_lengths, total_len):
    """Random token ids with a prompt of ``prompt_len`` and right-padded responses; returns ids, masks."""
    input_ids = torch.randint(1, VOCAB, (rows, total_len), generator=generator)
    attention_mask = torch.zeros(rows, total_len, dtype=torch.long)
    completion_mask = torch.zeros(rows, total_len, dtype=torch.long)
    for row, length in enumerate(response_lengths):
        attention_mask[row, : prompt_len + length] = 1
        completion_mask[row, prompt_len : prompt_len + length] = 1
    return input_ids, attention_mask, completion_mask


def _sums(table, input_ids, completion_mask):
    """Our side of the bookkeeping: summed response log-probs [rows] and response lengths [rows]."""
    return (table[input_ids] * completion_mask).sum(1), completion_mask.sum(1)


@pytest.fixture(scope="module")
def dpo_batch():
    generator = torch.Generator().manual_seed(0)
    batch = 4
    table = -torch.rand(VOCAB, generator=generator, dtype=torch.float64) * 3
    lengths = [3, 5, 1, 4, 5, 2, 4, 3]  # chosen rows then rejected rows
    input_ids, attention_mask, completion_mask = _sequences(generator, 2 * batch, 2, lengths, 8)
    ref_logps = -torch.rand(2 * batch, generator=generator, dtype=torch.float64) * 10
    sums, response_lengths = _sums(table, input_ids, completion_mask)
    # Our sft_loss convention for RPO: token-mean NLL over all chosen response tokens of the batch.
    chosen_nll = -(table[input_ids[:batch]] * completion_mask[:batch]).sum() / completion_mask[:batch].sum()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
              "ref_chosen_logps": ref_logps[:batch], "ref_rejected_logps": ref_logps[batch:]}
    available = {"policy_chosen_logps": sums[:batch], "policy_rejected_logps": sums[batch:],
                 "ref_chosen_logps": ref_logps[:batch], "ref_rejected_logps": ref_logps[batch:],
                 "chosen_lengths": response_lengths[:batch], "rejected_lengths": response_lengths[batch:],
                 "chosen_nll": chosen_nll}
    return SimpleNamespace(table=table, inputs=inputs, available=available)


def _run_trl_dpo(dpo_batch, loss_types, loss_weights, beta, label_smoothing=0.0):
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=loss_weights,
        beta=beta, label_smoothing=label_smoothing, use_weighting=False, _metrics=_metrics_store(),
        _total_train_tokens=0, _tp_size=1,
    )
    loss = DPOTrainer._compute_loss(fake_self, _TableLM(dpo_batch.table), dict(dpo_batch.inputs), return_outputs=False)
    return loss, {k: v[-1] for k, v in fake_self._metrics["train"].items()}


# ours name, TRL loss_type list, TRL loss_weights, hyper-parameters
DPO_TRAINER_CASES = [
    ("dpo", ["sigmoid"], [1.0], {"beta": 0.1}),
    ("dpo", ["sigmoid"], [1.0], {"beta": 0.7}),
    ("ipo", ["ipo"], [1.0], {"beta": 0.1}),  # TRL averages the log-ratios over response tokens
    ("ipo", ["ipo"], [1.0], {"beta": 1.3}),
    ("hinge", ["hinge"], [1.0], {"beta": 0.1}),
    ("hinge", ["hinge"], [1.0], {"beta": 0.9}),
    ("rdpo", ["robust"], [1.0], {"beta": 0.2, "label_smoothing": 0.15}),
    ("rpo", ["sigmoid", "sft"], [1.0, 0.7], {"beta": 0.3, "rpo_alpha": 0.7}),
]


@pytest.mark.parametrize(("name", "loss_types", "loss_weights", "hparams"), DPO_TRAINER_CASES)
def test_dpo_trainer_losses_match_trl(dpo_batch, name, loss_types, loss_weights, hparams):
    trl_loss, trl_metrics = _run_trl_dpo(dpo_batch, loss_types, loss_weights, hparams["beta"],
                                         hparams.get("label_smoothing", 0.0))
    losses, metrics = call_preference_loss(name, dpo_batch.available, hparams)
    _close(losses.mean(), trl_loss)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        _close(metrics[key], trl_metrics[key])


@pytest.mark.parametrize(("beta", "label_smoothing"), [(0.1, 0.0), (0.5, 0.1), (2.0, 0.3)])
def test_cdpo_matches_trl_cpo_sigmoid_on_log_ratios(dpo_batch, beta, label_smoothing):
    # TRL 1.16's DPOTrainer no longer smooths "sigmoid" (its "robust" is rDPO). The cDPO expression is
    # CPOTrainer.cpo_loss(loss_type="sigmoid"): fed the policy/reference log-ratios it computes exactly cDPO.
    a = dpo_batch.available
    chosen_logratios = a["policy_chosen_logps"] - a["ref_chosen_logps"]
    rejected_logratios = a["policy_rejected_logps"] - a["ref_rejected_logps"]
    fake_self = SimpleNamespace(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=label_smoothing,
                                accelerator=_Accelerator())
    trl_losses, _, _ = CPOTrainer.cpo_loss(fake_self, chosen_logratios, rejected_logratios)
    ours, _ = cdpo_loss(policy_chosen_logps=a["policy_chosen_logps"], policy_rejected_logps=a["policy_rejected_logps"],
                        ref_chosen_logps=a["ref_chosen_logps"], ref_rejected_logps=a["ref_rejected_logps"],
                        beta=beta, label_smoothing=label_smoothing)
    _close(ours, trl_losses)


# --- CPO/SimPO and ORPO: run TRL's concatenated_forward on logits from a stand-in model ----------------


@pytest.fixture(scope="module")
def logits_batch():
    """Chosen/rejected sequences with prompt labels -100, plus a model whose logits are ``W[input_ids]``."""
    generator = torch.Generator().manual_seed(1)
    batch, prompt_len, total_len = 3, 2, 7
    weights = torch.randn(VOCAB, VOCAB, generator=generator, dtype=torch.float64)
    tensors = {}
    for side, lengths in (("chosen", [2, 5, 3]), ("rejected", [4, 1, 5])):
        input_ids, attention_mask, completion_mask = _sequences(generator, batch, prompt_len, lengths, total_len)
        tensors[f"{side}_input_ids"] = input_ids
        tensors[f"{side}_attention_mask"] = attention_mask
        tensors[f"{side}_labels"] = input_ids.masked_fill(completion_mask == 0, -100)
        tensors[f"{side}_completion_mask"] = completion_mask

    class LogitsModel:
        def __call__(self, input_ids, attention_mask=None, **_):
            return SimpleNamespace(logits=weights[input_ids])

    def token_logps(side):  # log-prob of token t+1 given the logits at position t
        ids = tensors[f"{side}_input_ids"]
        logps = torch.log_softmax(weights[ids[:, :-1]], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return logps, tensors[f"{side}_completion_mask"][:, 1:], tensors[f"{side}_attention_mask"][:, 1:]

    chosen_logps, chosen_mask, chosen_attention = token_logps("chosen")
    rejected_logps, rejected_mask, _ = token_logps("rejected")
    trl_batch = {k: v for k, v in tensors.items() if not k.endswith("completion_mask")}
    return SimpleNamespace(
        model=LogitsModel(), batch=trl_batch,
        available={"policy_chosen_logps": (chosen_logps * chosen_mask).sum(1),
                   "policy_rejected_logps": (rejected_logps * rejected_mask).sum(1),
                   "chosen_lengths": chosen_mask.sum(1), "rejected_lengths": rejected_mask.sum(1)},
        # TRL's ORPO NLL: token mean over prompt AND response tokens of the chosen sequences.
        chosen_nll_prompt_and_response=-(chosen_logps * chosen_attention).sum() / chosen_attention.sum(),
    )


def _bind(fake_self, cls, *names):
    for name in names:
        setattr(fake_self, name, functools.partial(getattr(cls, name), fake_self))


@pytest.mark.parametrize(("beta", "gamma", "label_smoothing"), [(0.1, 0.5, 0.0), (2.5, 1.4, 0.0), (2.0, 0.8, 0.2)])
def test_simpo_matches_trl_cpo_trainer(logits_batch, beta, gamma, label_smoothing):
    fake_self = SimpleNamespace(
        accelerator=_Accelerator(), is_encoder_decoder=False, padding_value=0, pad_token_id=0, aux_loss_enabled=False,
        loss_type="simpo", cpo_alpha=0.0, alpha=0.0, beta=beta, simpo_gamma=gamma, label_smoothing=label_smoothing,
        concatenated_inputs=CPOTrainer.concatenated_inputs, get_batch_logps=CPOTrainer.get_batch_logps,
    )
    _bind(fake_self, CPOTrainer, "concatenated_forward", "cpo_loss")
    trl_loss, trl_metrics = CPOTrainer.get_batch_loss_metrics(fake_self, logits_batch.model, dict(logits_batch.batch))
    losses, metrics = simpo_loss(**logits_batch.available, beta=beta, gamma=gamma, label_smoothing=label_smoothing)
    _close(losses.mean(), trl_loss)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        _close(metrics[key], trl_metrics[key])


@pytest.mark.parametrize("orpo_lambda", [0.1, 0.5, 2.0])
def test_orpo_matches_trl_orpo_trainer(logits_batch, orpo_lambda):
    fake_self = SimpleNamespace(
        accelerator=_Accelerator(), is_encoder_decoder=False, padding_value=0, pad_token_id=0, aux_loss_enabled=False,
        beta=orpo_lambda, concatenated_inputs=ORPOTrainer.concatenated_inputs,
        get_batch_logps=ORPOTrainer.get_batch_logps,
    )
    _bind(fake_self, ORPOTrainer, "concatenated_forward", "odds_ratio_loss")
    trl_loss, trl_metrics = ORPOTrainer.get_batch_loss_metrics(fake_self, logits_batch.model, dict(logits_batch.batch))
    losses, metrics = orpo_loss(**logits_batch.available, chosen_nll=logits_batch.chosen_nll_prompt_and_response,
                                orpo_lambda=orpo_lambda)
    _close(losses.mean(), trl_loss)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "nll_loss", "log_odds_ratio", "log_odds_chosen"):
        _close(metrics[key], trl_metrics[key])


# --- KTO ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "desirable_weight", "undesirable_weight", "kl_sign"),
                         [(0.1, 1.0, 1.0, 1.0), (0.5, 1.33, 0.8, 1.0), (0.3, 1.0, 1.0, -1.0)])
def test_kto_matches_trl_kto_trainer(beta, desirable_weight, undesirable_weight, kl_sign):
    generator = torch.Generator().manual_seed(2)
    table = -torch.rand(VOCAB, generator=generator, dtype=torch.float64) * 3
    lengths = [3, 5, 1, 4, 2]
    input_ids, attention_mask, completion_mask = _sequences(generator, 5, 2, lengths, 8)
    kl_ids, kl_attention, kl_completion = _sequences(generator, 5, 2, lengths[-1:] + lengths[:-1], 8)
    label = torch.tensor([True, False, True, True, False])
    ref_logps = -torch.rand(5, generator=generator, dtype=torch.float64) * 8
    policy_kl_logps, _ = _sums(table, kl_ids, kl_completion)
    # kl_sign = -1 makes the batch KL estimate negative, exercising the clamp at 0.
    ref_kl_logps = policy_kl_logps - kl_sign * torch.rand(5, generator=generator, dtype=torch.float64)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
              "KL_input_ids": kl_ids, "KL_attention_mask": kl_attention, "KL_completion_mask": kl_completion,
              "label": label, "ref_logps": ref_logps, "ref_KL_logps": ref_kl_logps}
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), calculate_KL=True,
        precompute_ref_logps=True, loss_type="kto", beta=beta, desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight, aux_loss_enabled=False, _metrics=_metrics_store(),
        _total_train_tokens=0, _tp_size=1,
    )
    _bind(fake_self, KTOTrainer, "_compute_kl_logps")
    trl_loss = KTOTrainer._compute_loss(fake_self, _TableLM(table), inputs, return_outputs=False)
    trl_metrics = {k: v[-1] for k, v in fake_self._metrics["train"].items()}

    policy_logps, _ = _sums(table, input_ids, completion_mask)
    z0 = kto_kl_reference(policy_kl_logps=policy_kl_logps, ref_kl_logps=ref_kl_logps)
    losses, metrics = kto_loss(policy_logps=policy_logps, ref_logps=ref_logps, is_desirable=label, kl_reference=z0,
                               beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    _close(losses.mean(), trl_loss)
    for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        _close(metrics[key], trl_metrics[key])


# --- reward model -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("use_margin", "center_coef"), [(False, None), (True, None), (True, 0.01), (False, 0.3)])
def test_bradley_terry_matches_trl_reward_trainer(use_margin, center_coef):
    generator = torch.Generator().manual_seed(3)
    rewards = torch.randn(8, 1, generator=generator, dtype=torch.float64) * 2  # [chosen; rejected]
    inputs = {"input_ids": torch.ones(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3, dtype=torch.long)}
    margin = torch.rand(4, generator=generator, dtype=torch.float64)
    if use_margin:
        inputs["margin"] = margin
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(),
        args=SimpleNamespace(center_rewards_coefficient=center_coef), _metrics=_metrics_store(),
        _total_train_tokens=0, _tp_size=1,
    )
    trl_loss = RewardTrainer.compute_loss(fake_self, lambda **_: SimpleNamespace(logits=rewards), inputs)
    trl_metrics = {k: v[-1] for k, v in fake_self._metrics["train"].items()}
    losses, metrics = bradley_terry_loss(chosen_rewards=rewards[:4, 0], rejected_rewards=rewards[4:, 0],
                                         margin=margin if use_margin else None, center_coef=center_coef or 0.0)
    _close(losses.mean(), trl_loss)
    _close(metrics["accuracy"], trl_metrics["accuracy"])
    _close(metrics["margin"], trl_metrics["margin"])


# --- GRPO and RLOO ------------------------------------------------------------------------------------


def _grpo_fake_self(**overrides):
    fake = SimpleNamespace(
        accelerator=_Accelerator(), model=SimpleNamespace(training=True, is_gradient_checkpointing=False),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        use_vllm=False, vllm_importance_sampling_correction=False, current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics=_metrics_store(),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1,
                             gradient_accumulation_steps=1, gradient_checkpointing_kwargs=None,
                             per_device_train_batch_size=6),
    )
    for key, value in overrides.items():
        setattr(fake, key, value)
    return fake


@pytest.fixture(scope="module")
def grpo_batch():
    generator = torch.Generator().manual_seed(4)
    batch, length = 6, 7
    logps = -torch.rand(batch, length, generator=generator, dtype=torch.float64) * 2
    old_logps = logps + 0.3 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    ref_logps = logps + 0.2 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for row, n in enumerate([7, 3, 5, 1, 6, 4]):
        mask[row, :n] = 1
    advantages = torch.randn(batch, generator=generator, dtype=torch.float64)
    return SimpleNamespace(logps=logps, old_logps=old_logps, ref_logps=ref_logps, mask=mask, advantages=advantages)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize(("beta", "epsilon_low", "epsilon_high"), [(0.0, 0.2, 0.2), (0.04, 0.2, 0.28)])
def test_grpo_loss_matches_trl(grpo_batch, loss_type, beta, epsilon_low, epsilon_high):
    g = grpo_batch
    max_completion_length = 9
    fake_self = _grpo_fake_self(loss_type=loss_type, beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                                max_completion_length=max_completion_length)
    # Stand-in for the model forward: TRL's method gets our per-token log-probs and zero entropies.
    fake_self._get_per_token_logps_and_entropies = lambda *a, **k: (g.logps, torch.zeros_like(g.logps), None)
    empty = torch.zeros(6, 0, dtype=torch.long)
    inputs = {"prompt_ids": empty, "prompt_mask": empty, "completion_ids": torch.zeros_like(g.mask),
              "completion_mask": g.mask, "advantages": g.advantages, "old_per_token_logps": g.old_logps,
              "ref_per_token_logps": g.ref_logps, "num_items_in_batch": g.mask.sum()}
    trl_loss = GRPOTrainer._compute_loss(fake_self, None, inputs)
    trl_metrics = {k: v[-1] for k, v in fake_self._metrics["train"].items()}

    normalizer = {"dapo": g.mask.sum(), "dr_grpo": 6 * max_completion_length}.get(loss_type)
    loss, metrics = grpo_loss(logps=g.logps, old_logps=g.old_logps, ref_logps=g.ref_logps, advantages=g.advantages,
                              mask=g.mask, epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta,
                              aggregation=loss_type, normalizer=normalizer)
    _close(loss, trl_loss)
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean") + (("kl",) if beta else ()):
        _close(metrics[key], trl_metrics[key])


def _score_completions(trainer_cls, rewards, group_size, **overrides):
    """Run ``trainer_cls._generate_and_score_completions`` with generation and reward functions stubbed out."""
    n = rewards.numel()
    completion_ids = [[1 + (i % 3)] * (1 + i % 4) for i in range(n)]
    fake_self = _grpo_fake_self(
        environment_factories=None, environments=None, tools=None, pad_to_multiple_of=None,
        mask_truncated_completions=False, num_iterations=1, beta=0.0, num_generations=group_size,
        reward_weights=torch.ones(1), reward_func_names=["stub"], log_multimodal=False,
        _tokenizer=SimpleNamespace(pad_token_id=0), _pending_extra_logs={}, _pending_metrics={},
        _logs={"prompt": [], "completion": [], "advantages": [], "rewards": defaultdict(list),
               "extra": defaultdict(list)},
        _calculate_rewards=lambda *a, **k: rewards.float().unsqueeze(1),
        _get_per_token_logps_and_entropies=lambda model, ids, mask, keep, *a, **k: (torch.zeros(ids.size(0), keep),
                                                                                    None, None),
        **overrides,
    )
    # GRPO's _generate also returns tool masks, sampling log-probs, extra fields and images; RLOO's does not.
    generated = ([[5, 6]] * n, completion_ids, ["c"] * n)
    if trainer_cls is GRPOTrainer:
        generated = (generated[0], generated[1], None, generated[2], None, {}, None, None)
    fake_self._generate = lambda prompts: generated
    inputs = [{"prompt": f"p{i // group_size}"} for i in range(n)]
    return trainer_cls._generate_and_score_completions(fake_self, inputs)["advantages"]


@pytest.mark.parametrize("scale_rewards", ["group", "none"])
def test_group_advantages_match_trl_grpo(scale_rewards):
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, -1.0, 3.0, 0.25, 4.0, 4.0, 4.0, 4.0])
    trl_advantages = _score_completions(GRPOTrainer, rewards, 4, scale_rewards=scale_rewards,
                                        multi_objective_aggregation="sum_then_normalize")
    ours = group_advantages(rewards, group_size=4, scale_by_std=scale_rewards == "group")
    _close(ours, trl_advantages)


def test_rloo_advantages_match_trl_rloo():
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, -1.0, 3.0, 0.25, 4.0])
    trl_advantages = _score_completions(RLOOTrainer, rewards, 3, normalize_advantages=False, reward_clip_range=None,
                                        eos_token_ids=[0], chat_template_kwargs={})
    _close(rloo_advantages(rewards, group_size=3), trl_advantages)


def test_parity_fixture_is_not_degenerate(dpo_batch):
    # Guard: the random batch exercises both signs of the DPO margin and unequal response lengths.
    a = dpo_batch.available
    chosen_logratios = a["policy_chosen_logps"] - a["ref_chosen_logps"]
    margins = chosen_logratios - (a["policy_rejected_logps"] - a["ref_rejected_logps"])
    assert (margins > 0).any() and (margins < 0).any()
    assert len(set(a["chosen_lengths"].tolist())) > 1
    assert math.isfinite(float(F.logsigmoid(margins).sum()))
