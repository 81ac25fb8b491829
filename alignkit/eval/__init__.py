"""Evaluation: win rate with a judge, KL to a reference, length drift, diversity, refusals,
and a self-contained HTML report."""

from alignkit.eval.evaluate import evaluate_policy
from alignkit.eval.metrics import (
    WinRate,
    distinct_n,
    kl_from_samples,
    length_drift,
    pairwise_win_rate,
    position_debiased_scores,
    refusal_rate,
    wilson_interval,
)
from alignkit.eval.report import write_report
from alignkit.eval.sampled_kl import sampled_kl

__all__ = [
    "WinRate",
    "distinct_n",
    "evaluate_policy",
    "kl_from_samples",
    "length_drift",
    "pairwise_win_rate",
    "position_debiased_scores",
    "refusal_rate",
    "sampled_kl",
    "wilson_interval",
    "write_report",
]
