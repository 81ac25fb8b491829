"""The HTML report: tables, embedded plots, escaping, and no network references."""

import re

from alignkit.eval.plots import metric_series, panel_keys
from alignkit.eval.report import write_report

METRICS_ROWS = [
    {"step": 1, "loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.5},
    {"step": 2, "loss": 0.61, "rewards/chosen": 0.1, "rewards/rejected": -0.1, "kl": 0.02},
    {"step": 3, "eval/loss": 0.65, "rewards/margins": 0.3},  # rows may lack keys
    {"step": 4, "loss": 0.52, "rewards/accuracies": 0.75, "kl": 0.05, "learning_rate": 1e-6},
]

EVAL_RESULTS = {
    "n_prompts": 7,
    "max_new_tokens": 64,
    "judge": "RewardModelJudge",
    "win_rate": {"win_rate": 0.6429, "ci_low": 0.3, "ci_high": 0.88, "wins": 4, "losses": 2, "ties": 1, "n": 7},
    "reward": {"base": -0.2, "policy": 0.4},
    "kl": {"k1": 1.5, "k1_stderr": 0.3, "k3": 1.2, "k3_stderr": 0.2, "n": 7},
    "length": {"base_mean_length": 20.0, "policy_mean_length": 31.0, "ratio": 1.55, "unit": "tokens"},
    "distinct": {"base": {"distinct_1": 0.5, "distinct_2": 0.8}, "policy": {"distinct_1": 0.4, "distinct_2": 0.7}},
    "judge_order_invariant": True,
    "judge_provenance": {"statement": "Prompts the judge and the policy both trained on: 0."},
    "refusal_rate": {"all": {"n": 14, "base": 0.0, "policy": 2 / 14, "base_count": 0, "policy_count": 2},
                     "harmful": {"n": 2, "base": 0.0, "policy": 1.0, "base_count": 0, "policy_count": 2}},
    "samples": [
        {"prompt": [{"role": "user", "content": f"question {i} <b>&"}], "base": f"base answer {i}", "tag": tag,
         "policy": f"aligned answer {i} <script>alert(1)</script>", "judge_score": 0.7,
         "base_refused": False, "policy_refused": tag == "harmful"}
        for i, tag in enumerate(["helpful"] * 12 + ["harmful"] * 2)
    ],
}

ABLATION = [{"beta": 0.05, "win_rate": 0.7, "kl": 4.0}, {"beta": 0.1, "win_rate": 0.64, "kl": 2.1}, {"beta": 0.5, "win_rate": 0.55, "kl": 0.4}]


def test_metric_series_skips_rows_without_the_key():
    assert metric_series(METRICS_ROWS, "loss") == ([1, 2, 4], [0.69, 0.61, 0.52])
    assert panel_keys(METRICS_ROWS) == {
        "loss": ["loss", "eval/loss"],
        "rewards": ["rewards/chosen", "rewards/rejected", "rewards/margins"],
        "reward accuracy": ["rewards/accuracies"],
        "KL": ["kl"],
    }


def test_report_is_self_contained_with_tables_plots_and_samples(tmp_path):
    path = write_report(tmp_path / "run", metrics_rows=METRICS_ROWS, eval_results=EVAL_RESULTS, ablation=ABLATION)
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text(encoding="utf-8")
    # tables
    assert 'class="win-rate"' in page and "95% CI (Wilson)" in page and "[0.300, 0.880]" in page
    assert 'class="ablation"' in page and "<th>beta</th>" in page and "0.05" in page
    assert 'class="length-drift"' in page and "1.55" in page
    assert 'class="refusals"' in page and "1 (2/2)" in page and "0 (0/2)" in page  # rates with their counts
    assert 'class="refusal-prompts"' in page and page.count("<td>refused</td>") == 2  # the prompts behind them
    assert "cannot matter and is not asked twice" in page and "both orders" not in page  # a reward model's judgement
    assert "Judge independence" in page and "both trained on: 0" in page
    # four training panels + the ablation frontier, embedded
    assert page.count('src="data:image/png;base64,') == 5
    assert len(list((tmp_path / "run" / "report_plots").glob("*.png"))) == 5
    assert (tmp_path / "run" / "eval_results.json").exists()
    # eight samples, both tags shown although the harmful ones are the last rows, escaped
    samples = page.split('class="sample"')[1].split("</table>")[0]
    assert samples.count("aligned answer") == 8 and samples.count("<td>harmful</td>") == 2
    assert "question 0 &lt;b&gt;&amp;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    # nothing to fetch from the network
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)


def test_report_without_training_rows_or_ablation(tmp_path):
    page = write_report(tmp_path, metrics_rows=[], eval_results={"samples": []}).read_text()
    assert "No training metrics" in page and "data:image" not in page and "ablation" not in page
