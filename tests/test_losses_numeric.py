"""Hand-computed values, limits and gradient directions for alignkit.losses (CPU, tiny tensors).

Expected numbers are written out or computed with ``math`` here, never by calling the function under test.
"""

import ast
import inspect
import math
from pathlib import Path

import pytest
import torch

import alignkit.losses as losses_pkg
from alignkit.losses import (
    PREFERENCE_LOSSES,
    AdaptiveKLController,
    FixedKLController,
    aggregate_token_losses,
    bradley_terry_loss,
    call_preference_loss,
    cdpo_loss,
    dpo_loss,
    ensemble_reward,
    gae_advantages,
    group_advantages,
    grpo_loss,
    hinge_loss,
    ipo_loss,
    kl_penalized_rewards,
    kl_penalty,
    kto_kl_reference,
    kto_loss,
    masked_mean,
    masked_sum,
    masked_whiten,
    orpo_loss,
    ppo_policy_loss,
    ppo_value_loss,
    rdpo_loss,
    rloo_advantages,
    rpo_loss,
    sft_loss,
    simpo_loss,
)

LN2 = math.log(2.0)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def neg_log_sigmoid(x):
    return math.log1p(math.exp(-x))


def approx(value, expected, tol=1e-6):
    return torch.allclose(torch.as_tensor(value, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64),
                          atol=tol, rtol=0)


# A pair with chosen log-ratio +1 and rejected log-ratio -1 (Δ = 2).
PAIR = {"policy_chosen_logps": t(-1.0), "policy_rejected_logps": t(-3.0),
        "ref_chosen_logps": t(-2.0), "ref_rejected_logps": t(-2.0)}


# --- reduction ---------------------------------------------------------------------------------------

VALUES = t(1.0, 2.0, 3.0, 4.0, 5.0, 6.0).view(2, 3)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_reductions_by_hand():
    assert approx(masked_sum(VALUES, MASK), 7.0)
    assert approx(masked_mean(VALUES, MASK), 7.0 / 3)
    assert approx(masked_mean(VALUES, MASK, dim=-1), [1.5, 4.0])
    assert approx(masked_mean(VALUES, torch.zeros_like(MASK)), 0.0)  # empty mask -> 0, not NaN
    whitened = masked_whiten(VALUES, MASK)
    assert approx(masked_mean(whitened, MASK), 0.0)
    # unbiased variance of {1, 2, 4} is 7/3, so the whitened 4 is (4 - 7/3) / sqrt(7/3)
    assert approx(whitened[1, 0], (4 - 7 / 3) / math.sqrt(7 / 3), tol=1e-6)


def test_token_aggregations_by_hand():
    assert approx(aggregate_token_losses(VALUES, MASK, aggregation="token_mean"), 7 / 3)
    assert approx(aggregate_token_losses(VALUES, MASK, aggregation="token_mean", normalizer=14), 0.5)
    assert approx(aggregate_token_losses(VALUES, MASK, aggregation="sequence_mean"), (1.5 + 4.0) / 2)
    assert approx(aggregate_token_losses(VALUES, MASK, aggregation="constant_normalizer", normalizer=10), 0.7)
    with pytest.raises(ValueError):
        aggregate_token_losses(VALUES, MASK, aggregation="constant_normalizer")
    with pytest.raises(ValueError):
        aggregate_token_losses(VALUES, MASK, aggregation="nope")


# --- SFT ---------------------------------------------------------------------------------------------


def test_sft_loss_counts_response_tokens_only():
    token_logps = -VALUES  # NLL of the response tokens 1, 2 and 4
    loss, metrics = sft_loss(token_logps=token_logps, response_mask=MASK)
    assert approx(loss, 7 / 3)
    assert approx(metrics["num_tokens"], 3)
    assert approx(metrics["nll/per_example"], [1.5, 4.0])
    global_loss, _ = sft_loss(token_logps=token_logps, response_mask=MASK, normalizer=14)
    assert approx(global_loss, 0.5)


# --- reward models -----------------------------------------------------------------------------------


def test_bradley_terry_by_hand():
    # r_w = 5, r_l = 3: P = σ(2) = 0.8808, loss = -log 0.8808 = 0.1269
    losses, metrics = bradley_terry_loss(chosen_rewards=t(5.0, 1.0), rejected_rewards=t(3.0, 2.0))
    assert approx(losses[0], 0.126928, tol=1e-6)
    assert approx(losses[1], neg_log_sigmoid(-1.0))
    assert approx(metrics["accuracy"], 0.5) and approx(metrics["margin"], 0.5)
    assert approx(metrics["rewards/chosen"], 3.0) and approx(metrics["rewards/rejected"], 2.5)
    # Llama-2 margin m = 1 and centering c·(r_w + r_l)² with c = 0.01: -log σ(1) + 0.01·64
    losses, _ = bradley_terry_loss(chosen_rewards=t(5.0), rejected_rewards=t(3.0), margin=t(1.0), center_coef=0.01)
    assert approx(losses, neg_log_sigmoid(1.0) + 0.64)


def test_ensemble_reward_modes_by_hand():
    rewards = t(1.0, 2.0, 3.0, 2.0, 5.0, 8.0).view(3, 2)  # K = 3 members, B = 2
    assert approx(ensemble_reward(rewards, mode="mean"), [3.0, 4.0])
    assert approx(ensemble_reward(rewards, mode="min"), [1.0, 2.0])
    # population std: column 0 {1,3,5} -> sqrt(8/3); column 1 {2,2,8} -> sqrt(8)
    expected = [3 - 0.5 * math.sqrt(8 / 3), 4 - 0.5 * math.sqrt(8)]
    assert approx(ensemble_reward(rewards, mode="mean_minus_std", k=0.5), expected)
    assert approx(ensemble_reward(rewards, mode="mean_minus_var", k=0.1), [3 - 0.8 / 3, 4 - 0.8])
    with pytest.raises(ValueError):
        ensemble_reward(rewards, mode="max")


# --- paired preference losses ------------------------------------------------------------------------


def test_dpo_by_hand():
    losses, metrics = dpo_loss(**PAIR, beta=0.5)  # β·Δ = 1
    assert approx(losses, neg_log_sigmoid(1.0))  # 0.313262
    assert approx(losses, 0.313262, tol=1e-6)
    assert approx(metrics["rewards/chosen"], 0.5) and approx(metrics["rewards/rejected"], -0.5)
    assert approx(metrics["rewards/margins"], 1.0) and approx(metrics["rewards/accuracies"], 1.0)
    assert approx(metrics["logps/chosen"], -1.0) and approx(metrics["logps/rejected"], -3.0)
    assert all(not value.requires_grad for value in metrics.values())


def test_dpo_limits_are_ln2():
    equal = {"policy_chosen_logps": t(-4.0, -7.0), "policy_rejected_logps": t(-2.0, -9.0),
             "ref_chosen_logps": t(-4.0, -7.0), "ref_rejected_logps": t(-2.0, -9.0)}
    assert approx(dpo_loss(**equal, beta=0.1)[0], [LN2, LN2])
    assert approx(LN2, 0.693147, tol=1e-6)
    assert approx(dpo_loss(**PAIR, beta=1e-9)[0], LN2)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-5.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-4.0, -6.0], dtype=torch.float64, requires_grad=True)
    losses, _ = dpo_loss(policy_chosen_logps=chosen, policy_rejected_logps=rejected,
                         ref_chosen_logps=t(-5.0, -2.0), ref_rejected_logps=t(-5.0, -3.0), beta=0.1)
    losses.mean().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    # ∂loss_i/∂chosen_i = -β·σ(-β·Δ_i)/B; pair 0 has Δ = 0 - 1 = -1
    assert approx(chosen.grad[0], -0.1 / (1 + math.exp(-0.1)) / 2)


def test_cdpo_and_rdpo_by_hand():
    cdpo, _ = cdpo_loss(**PAIR, beta=0.5, label_smoothing=0.1)
    assert approx(cdpo, 0.9 * neg_log_sigmoid(1.0) + 0.1 * neg_log_sigmoid(-1.0))  # 0.413262
    assert approx(cdpo_loss(**PAIR, beta=0.5, label_smoothing=0.0)[0], dpo_loss(**PAIR, beta=0.5)[0])
    rdpo, _ = rdpo_loss(**PAIR, beta=0.5, label_smoothing=0.1)
    assert approx(rdpo, (0.9 * neg_log_sigmoid(1.0) - 0.1 * neg_log_sigmoid(-1.0)) / 0.8)  # 0.188262
    with pytest.raises(ValueError):
        rdpo_loss(**PAIR, beta=0.5, label_smoothing=0.5)


def test_ipo_averages_log_ratios_over_tokens():
    # chosen log-ratio 0 - (-2) = 2 over 4 tokens, rejected -1 over 2 tokens: h = 0.5 - (-0.5) = 1
    pair = {**PAIR, "policy_chosen_logps": t(0.0)}
    losses, metrics = ipo_loss(**pair, chosen_lengths=t(4.0), rejected_lengths=torch.tensor([2]), beta=0.25)
    assert approx(losses, (1.0 - 1 / (2 * 0.25)) ** 2)  # (1 - 2)² = 1
    assert approx(metrics["rewards/chosen"], 0.25 * 2.0)  # implicit rewards use the summed log-ratios (TRL)


def test_hinge_and_rpo_by_hand():
    assert approx(hinge_loss(**PAIR, beta=0.25)[0], 0.5)  # max(0, 1 - 0.25·2)
    assert approx(hinge_loss(**PAIR, beta=1.0)[0], 0.0)
    losses, metrics = rpo_loss(**PAIR, chosen_nll=torch.tensor(2.0, dtype=torch.float64), beta=0.5, rpo_alpha=0.5)
    assert approx(losses, neg_log_sigmoid(1.0) + 1.0)
    assert approx(metrics["nll_loss"], 2.0)
    per_example, _ = rpo_loss(**PAIR, chosen_nll=t(3.0), beta=0.5, rpo_alpha=0.0)
    assert approx(per_example, neg_log_sigmoid(1.0))


def test_simpo_by_hand():
    # chosen mean log-prob -4/4 = -1, rejected -6/2 = -3; β = 2, γ = 1: logit 2·2 - 1 = 3
    losses, metrics = simpo_loss(policy_chosen_logps=t(-4.0), policy_rejected_logps=t(-6.0),
                                 chosen_lengths=t(4.0), rejected_lengths=t(2.0), beta=2.0, gamma=1.0)
    assert approx(losses, neg_log_sigmoid(3.0))  # 0.048587
    assert approx(metrics["rewards/chosen"], -2.0) and approx(metrics["logps/rejected"], -3.0)


def test_orpo_by_hand():
    # mean token prob 0.5 -> odds 1; mean token prob 0.2 -> odds 1/4; odds ratio 4
    losses, metrics = orpo_loss(policy_chosen_logps=t(3 * math.log(0.5)), policy_rejected_logps=t(2 * math.log(0.2)),
                                chosen_lengths=t(3.0), rejected_lengths=t(2.0),
                                chosen_nll=torch.tensor(1.5, dtype=torch.float64), orpo_lambda=0.5)
    assert approx(losses, 1.5 + 0.5 * math.log(1 + 1 / 4))  # -log σ(log 4) = log(5/4)
    assert approx(metrics["log_odds_chosen"], math.log(4.0))


def test_preference_table_flags_match_signatures():
    for name, spec in PREFERENCE_LOSSES.items():
        parameters = inspect.signature(spec.fn).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), name
        assert spec.needs_reference == ("ref_chosen_logps" in parameters), name
        assert spec.length_normalized == ("chosen_lengths" in parameters), name
        assert spec.needs_chosen_nll == ("chosen_nll" in parameters), name
        assert set(parameters) <= losses_pkg.PREFERENCE_ARGUMENTS, name


def test_call_preference_loss_passes_only_what_each_loss_takes():
    available = {**PAIR, "chosen_lengths": t(1.0), "rejected_lengths": t(1.0), "chosen_nll": t(0.0)}
    hparams = {"beta": 0.5, "gamma": 0.0, "rpo_alpha": 1.0, "orpo_lambda": 0.1, "label_smoothing": 0.0}
    for name in PREFERENCE_LOSSES:
        losses, metrics = call_preference_loss(name, available, hparams)
        assert losses.shape == (1,) and "rewards/margins" in metrics, name
    assert approx(call_preference_loss("dpo", available, hparams)[0], dpo_loss(**PAIR, beta=0.5)[0])
    with pytest.raises(KeyError):
        call_preference_loss("dpo", available, {"beta": 0.5, "gama": 1.0})  # typo caught
    with pytest.raises(TypeError, match="beta"):
        call_preference_loss("dpo", available, {})
    with pytest.raises(KeyError):
        call_preference_loss("not-a-loss", available, hparams)


# --- KTO ---------------------------------------------------------------------------------------------


def test_kto_by_hand():
    # β = 1, z0 = 0.5; desirable r = 1.5 -> 1 - σ(1); undesirable r = 0.5 -> 1 - σ(0) = 0.5
    losses, metrics = kto_loss(policy_logps=t(-1.0, -2.0), ref_logps=t(-2.5, -2.5),
                               is_desirable=torch.tensor([True, False]), kl_reference=torch.tensor(0.5), beta=1.0,
                               desirable_weight=2.0)
    assert approx(losses, [2 * (1 - 1 / (1 + math.exp(-1.0))), 0.5])
    assert approx(metrics["rewards/chosen"], 1.5) and approx(metrics["rewards/margins"], 1.0)
    only_desirable = kto_loss(policy_logps=t(-1.0), ref_logps=t(-2.0), is_desirable=torch.tensor([True]),
                              kl_reference=0.0, beta=1.0)[1]
    assert "rewards/rejected" not in only_desirable and "rewards/margins" not in only_desirable


def test_kto_kl_reference_mean_and_clamp():
    assert approx(kto_kl_reference(policy_kl_logps=t(1.0, 2.0), ref_kl_logps=t(0.5, 0.5)), 1.0)
    assert approx(kto_kl_reference(policy_kl_logps=t(0.0, 0.0), ref_kl_logps=t(0.5, 0.5)), 0.0)
    policy = t(1.0, 2.0).requires_grad_()
    assert not kto_kl_reference(policy_kl_logps=policy, ref_kl_logps=t(0.0, 0.0)).requires_grad


# --- KL, PPO -----------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    logps, ref_logps = t(0.0), t(math.log(2.0))  # log r = log 2
    assert approx(kl_penalty(logps, ref_logps, estimator="k1"), -LN2)
    assert approx(kl_penalty(logps, ref_logps, estimator="k2"), 0.5 * LN2**2)
    assert approx(kl_penalty(logps, ref_logps, estimator="k3"), 2 - LN2 - 1)
    with pytest.raises(ValueError):
        kl_penalty(logps, ref_logps, estimator="k4")


def test_ppo_policy_loss_by_hand():
    logps = torch.log(t(1.5, 1.5)).view(1, 2)
    loss, metrics = ppo_policy_loss(logps=logps, old_logps=torch.zeros(1, 2, dtype=torch.float64),
                                    advantages=t(1.0, -1.0).view(1, 2), mask=torch.ones(1, 2), clip_epsilon=0.2)
    # A = +1: max(-1.5, -1.2) = -1.2 (clipped); A = -1: max(1.5, 1.2) = 1.5 (unclipped)
    assert approx(loss, (-1.2 + 1.5) / 2)
    assert approx(metrics["clipfrac"], 0.5) and approx(metrics["ratio"], 1.5)


def test_ppo_value_loss_by_hand():
    loss, metrics = ppo_value_loss(values=t(1.0).view(1, 1), old_values=t(0.0).view(1, 1), returns=t(2.0).view(1, 1),
                                   mask=torch.ones(1, 1), clip_range=0.2)
    assert approx(loss, 0.5 * (0.2 - 2.0) ** 2)  # clipped prediction 0.2 has the larger error
    assert approx(metrics["vf_clipfrac"], 1.0)


def test_gae_reward_to_go_and_td():
    rewards, values = t(1.0, 2.0, 3.0).view(1, 3), t(0.5, 0.5, 0.5).view(1, 3)
    advantages, returns = gae_advantages(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert approx(returns, [[6.0, 5.0, 3.0]]) and approx(advantages, [[5.5, 4.5, 2.5]])
    # λ = 0: A_t = δ_t = r_t + γ·V_{t+1} - V_t; right padding ends the episode
    advantages, _ = gae_advantages(t(0.0, 1.0, 9.0).view(1, 3), t(1.0, 2.0, 7.0).view(1, 3),
                                   torch.tensor([[1, 1, 0]]), gamma=0.5, lam=0.0)
    assert approx(advantages, [[0.0 + 0.5 * 2.0 - 1.0, 1.0 - 2.0, 0.0]])


def test_kl_penalized_rewards_put_score_on_last_token():
    rewards, kl = kl_penalized_rewards(scores=t(3.0), logps=t(0.0, -1.0, -1.0, 0.0).view(1, 4),
                                       ref_logps=t(0.0, -2.0, -1.5, 0.0).view(1, 4), mask=torch.tensor([[0, 1, 1, 0]]),
                                       kl_coef=0.1)
    assert approx(kl, [[0.0, 1.0, 0.5, 0.0]])
    assert approx(rewards, [[0.0, -0.1, -0.05 + 3.0, 0.0]])


def test_kl_controllers_move_the_right_way():
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=12.0, n_steps=1000)  # error clipped to +0.2
    assert approx(controller.kl_coef, 0.1 * 1.02)
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=5.4, n_steps=1000)  # error -0.1
    assert approx(controller.kl_coef, 0.1 * 0.99)
    fixed = FixedKLController(kl_coef=0.2)
    fixed.update(current_kl=100.0, n_steps=1000)
    assert fixed.kl_coef == 0.2


# --- GRPO / RLOO -------------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = t(1.0, 2.0, 3.0, 5.0, 5.0, 8.0)
    advantages = group_advantages(rewards, group_size=3)
    assert approx(advantages[:3], [-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4)])  # group std is 1
    assert approx(advantages.view(2, 3).mean(dim=1), [0.0, 0.0])
    assert approx(group_advantages(rewards.view(2, 3), group_size=3, scale_by_std=False), [[-1, 0, 1], [-1, -1, 2]])
    with pytest.raises(ValueError):
        group_advantages(rewards, group_size=4)


def test_rloo_advantages_by_hand():
    assert approx(rloo_advantages(t(1.0, 2.0, 3.0), group_size=3), [1 - 2.5, 2 - 2.0, 3 - 1.5])


def test_grpo_loss_by_hand():
    logps = t(-1.0, -2.0, -3.0).view(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = grpo_loss(logps=logps, old_logps=logps, advantages=t(2.0), mask=mask)
    assert approx(loss, -2.0) and approx(metrics["clip_ratio/region_mean"], 0.0)
    # with β = 0.5 and ref = logps + log 2 on every token, each token adds 0.5·(2 - log 2 - 1)
    loss, metrics = grpo_loss(logps=logps, old_logps=logps, ref_logps=logps + LN2, advantages=t(2.0), mask=mask,
                              beta=0.5)
    assert approx(loss, -2.0 + 0.5 * (1 - LN2)) and approx(metrics["kl"], 1 - LN2)
    # Dr. GRPO: sum over valid tokens / (B · max_completion_length)
    loss, _ = grpo_loss(logps=logps, old_logps=logps, advantages=t(2.0), mask=mask, aggregation="dr_grpo", normalizer=4)
    assert approx(loss, -4.0 / 4)


def test_grpo_clip_higher():
    old = torch.zeros(1, 1, dtype=torch.float64)
    logps = torch.log(t(1.25)).view(1, 1)  # ratio 1.25, A > 0
    loss_sym, _ = grpo_loss(logps=logps, old_logps=old, advantages=t(1.0), mask=torch.ones(1, 1), epsilon_low=0.2)
    loss_dapo, _ = grpo_loss(logps=logps, old_logps=old, advantages=t(1.0), mask=torch.ones(1, 1),
                             epsilon_low=0.2, epsilon_high=0.28)
    assert approx(loss_sym, -1.2) and approx(loss_dapo, -1.25)


# --- packaging ---------------------------------------------------------------------------------------


def test_losses_import_only_torch():
    allowed = {"torch", "alignkit", "collections", "dataclasses", "inspect", "typing", "math", "__future__"}
    for path in Path(losses_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
