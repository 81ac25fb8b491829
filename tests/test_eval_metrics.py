"""Evaluation metrics against hand-computed values (no model)."""

import math

import pytest
import torch

from alignkit.eval.metrics import (
    distinct_n,
    kl_from_samples,
    length_drift,
    pairwise_win_rate,
    position_debiased_scores,
    refusal_rate,
    wilson_interval,
)

Z = 1.959963984540054


def test_both_orders_cancel_a_judge_that_always_prefers_position_a():
    # The judge says "the first one is better" whatever it is shown: p_ab = p_ba = 1.
    result = pairwise_win_rate([1.0] * 4, [1.0] * 4)
    assert (result.wins, result.losses, result.ties, result.n) == (0, 0, 4, 4)
    assert result.win_rate == 0.5


def test_win_rate_scores_and_tie_rule_by_hand():
    p_ab = [0.9, 0.2, 1.0, 0.6]
    p_ba = [0.3, 0.7, 1.0, 0.5]
    # s = (p_ab + 1 - p_ba) / 2 = 0.8 (win), 0.25 (loss), 0.5 (tie), 0.55 (win)
    assert position_debiased_scores(p_ab, p_ba) == pytest.approx([0.8, 0.25, 0.5, 0.55])
    result = pairwise_win_rate(p_ab, p_ba)
    assert (result.wins, result.losses, result.ties) == (2, 1, 1)
    assert result.win_rate == pytest.approx((2 + 0.5) / 4)
    # A margin of 0.1 turns s = 0.55 into a tie: 1 win, 1 loss, 2 ties.
    wide = pairwise_win_rate(p_ab, p_ba, tie_margin=0.1)
    assert (wide.wins, wide.losses, wide.ties) == (1, 1, 2)
    assert wide.win_rate == pytest.approx(0.5)


def test_win_rate_interval_is_wilson_of_the_rate():
    result = pairwise_win_rate([0.9, 0.2, 1.0, 0.6], [0.3, 0.7, 1.0, 0.5])
    p, n = 0.625, 4
    # Wilson (1927) by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    low = (p + Z**2 / (2 * n) - spread) / (1 + Z**2 / n)
    high = (p + Z**2 / (2 * n) + spread) / (1 + Z**2 / n)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert result.ci_low < result.win_rate < result.ci_high
    assert result.as_dict()["n"] == 4


def test_wilson_interval_textbook_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)  # never degenerate at 0, unlike the Wald interval
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError):
        pairwise_win_rate([0.5], [0.5, 0.5])
    with pytest.raises(ValueError):
        pairwise_win_rate([1.5], [0.5])
    with pytest.raises(ValueError):
        pairwise_win_rate([], [])


def test_kl_k1_and_k3_by_hand_per_token():
    policy = [[-1.0, -2.0], [-0.5]]
    ref = [[-1.5, -1.0], [-1.0]]
    # log ratios l = policy - ref: [0.5, -1.0] and [0.5]
    k1 = [0.5 - 1.0, 0.5]
    k3_token = lambda l: math.exp(-l) - 1 + l  # noqa: E731
    k3 = [k3_token(0.5) + k3_token(-1.0), k3_token(0.5)]
    result = kl_from_samples(policy, ref)
    assert result["n"] == 2
    assert result["k1"] == pytest.approx(sum(k1) / 2)
    assert result["k3"] == pytest.approx(sum(k3) / 2)
    # std error = sample std (ddof 1) / sqrt(n): k1 = [-0.5, 0.5] -> std 0.7071 -> 0.5
    assert result["k1_stderr"] == pytest.approx(0.5)
    assert result["k3_stderr"] == pytest.approx(abs(k3[0] - k3[1]) / math.sqrt(2) / math.sqrt(2))


def test_kl_padded_tensor_equals_ragged_lists_and_sequence_sums_give_sequence_k3():
    padded_policy = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])  # zero = outside the response
    padded_ref = torch.tensor([[-1.5, -1.0], [-1.0, 0.0]])
    ragged = kl_from_samples([[-1.0, -2.0], [-0.5]], [[-1.5, -1.0], [-1.0]])
    assert kl_from_samples(padded_policy, padded_ref) == pytest.approx(ragged)
    sums = kl_from_samples(padded_policy.sum(-1), padded_ref.sum(-1))
    assert sums["k1"] == pytest.approx(ragged["k1"])
    seq_ratio = [-0.5, 0.5]
    assert sums["k3"] == pytest.approx(sum(math.exp(-l) - 1 + l for l in seq_ratio) / 2)


def test_kl_of_identical_models_is_zero_and_single_sample_has_no_stderr():
    result = kl_from_samples([[-1.0, -3.0]], [[-1.0, -3.0]])
    assert result["k1"] == 0.0 and result["k3"] == 0.0 and result["k1_stderr"] is None


def test_length_drift_in_words_and_tokens():
    drift = length_drift(["a b", "c d e f"], ["a b c d e f", "x y z"])
    assert drift == {"base_mean_length": 3.0, "policy_mean_length": 4.5, "ratio": 1.5, "unit": "words"}

    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    by_chars = length_drift(["ab"], ["abcd"], CharTokenizer())
    assert (by_chars["ratio"], by_chars["unit"]) == (2.0, "tokens")
    assert length_drift([""], ["a"])["ratio"] is None


def test_distinct_n_by_hand():
    texts = ["the cat sat", "the cat ran"]
    # unigrams: 6 in all, 4 distinct; bigrams: 4 in all (none across texts), 3 distinct
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["a a a a"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["one"], 2) == 0.0


def test_refusal_rate_uses_the_detector():
    texts = ["I can't help with that.", "Sure, here it is.", "I'm sorry, but no.", "I can't wait to start!"]
    assert refusal_rate(texts) == 0.5
    assert refusal_rate(texts, detector=lambda t: t.startswith("Sure")) == 0.25
