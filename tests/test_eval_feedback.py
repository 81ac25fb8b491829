"""The eval stage's AI-feedback additions: several judges on the same responses (win rates,
position bias, κ), the LLM judge's win rate when no reward model is given, the sycophancy probe
before and after; and `alignkit eval` with a reward model and an LLM judge end to end."""

import json
import math

import pytest
from click.testing import CliRunner

from alignkit.eval.feedback import add_judge_panel


class Fixed:
    """A judge answering from a table: P(first ≻ second) by (first, second) text."""

    def __init__(self, table, kind="llm"):
        self.table, self.kind = table, kind

    def judge(self, prompts, a, b):
        return [self.table.get((x, y), math.nan) for x, y in zip(a, b)]


def result_with(policy, base):
    return {"win_rate": None, "judge": None, "samples": [{"policy": p, "base": b} for p, b in zip(policy, base)]}


def test_panel_fills_win_rate_samples_and_agreement():
    policy, base = ["p0", "p1", "p2"], ["b0", "b1", "b2"]
    prompts = [[{"role": "user", "content": str(i)}] for i in range(3)]
    likes_policy = Fixed({("p0", "b0"): 1, ("b0", "p0"): 0, ("p1", "b1"): 1, ("b1", "p1"): 0, ("p2", "b2"): 0, ("b2", "p2"): 1})
    says_a = Fixed({(x, y): 1 for x, y in [("p0", "b0"), ("b0", "p0"), ("p1", "b1"), ("b1", "p1")]})  # p2 unparseable
    result = result_with(policy, base)
    add_judge_panel(result, {"likes": likes_policy, "says_a": says_a}, prompts)
    assert result["judge"] == "likes" and result["win_rate"]["win_rate"] == pytest.approx(2 / 3)
    assert result["judges"]["says_a"]["n_decided"] == 2 and result["judges"]["says_a"]["unparseable_calls"] == 2
    assert result["samples"][2]["judges"] == {"likes": 0.0, "says_a": None}
    assert result["samples"][0]["judges"]["says_a"] == 0.5  # always "A": cancelled to a tie
    (pair,) = result["agreement"]
    assert pair["n"] == 2 and pair["raw_agreement"] == 0.0
    assert "scores" not in result["judges"]["likes"]  # per prompt only in the samples


def test_panel_keeps_a_reward_model_win_rate():
    result = result_with(["p"], ["b"])
    result["win_rate"], result["judge"] = {"win_rate": 0.9}, "RewardModelJudge"
    add_judge_panel(result, {"llm": Fixed({("p", "b"): 0, ("b", "p"): 1})}, [[{"role": "user", "content": "x"}]])
    assert result["win_rate"] == {"win_rate": 0.9} and result["judges"]["llm"]["win_rate"]["win_rate"] == 0.0


@pytest.mark.slow
def test_alignkit_eval_with_reward_model_and_llm_judges(tiny_dir, tmp_path):
    """~1 min on a shared 2-core CPU: three tiny models, greedy decoding, KL, judges, probe, report."""
    from alignkit.cli import app
    from alignkit.models.heads import load_scalar_model

    rm, tokenizer = load_scalar_model(tiny_dir)
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "eval", "--policy", tiny_dir, "--baseline", tiny_dir, "--judge", str(tmp_path / "rm"), "--judge", tiny_dir,
        "--sycophancy", "--limit", "3", "--max-new-tokens", "4", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    (evaluated,) = json.loads((out / "eval" / "eval.json").read_text()).values()
    assert set(evaluated["judges"]) == {str(tmp_path / "rm"), tiny_dir}
    assert evaluated["judges"][str(tmp_path / "rm")]["order_invariant"] is True
    llm = evaluated["judges"][tiny_dir]
    assert llm["kind"] == "llm" and "swap_consistency" in llm["position"] and "verdicts" in llm
    assert evaluated["agreement"][0]["judges"] == [str(tmp_path / "rm"), tiny_dir]
    assert evaluated["win_rate"]["n"] == 3  # the reward model's, as before
    assert set(evaluated["sycophancy"]) >= {"base", "policy", "agree_rate_change"}
