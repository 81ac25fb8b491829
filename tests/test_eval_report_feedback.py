"""The report's judge-panel and sycophancy sections, on results shaped by the real eval code
(``judge_panel``, ``sycophancy.score_answers`` / ``compare``), escaped, and absent when not evaluated."""

import re

from alignkit.eval.judging import judge_panel
from alignkit.eval.report import write_report
from alignkit.eval.sycophancy import compare, score_answers

PROMPTS = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
POLICY = ["long answer one", "long answer two", "x", "long answer four"]
BASE = ["short", "short", "a longer base", "short"]


class FirstShown:
    """Pure position bias: the first response always wins."""

    def judge(self, prompts, a, b):
        return [1.0] * len(prompts)


class Longer:
    """Prefers the longer response; says nothing parseable on the third prompt."""

    def judge(self, prompts, a, b):
        return [float("nan") if p[0]["content"] == "q2" else float(len(x) > len(y)) for p, x, y in zip(prompts, a, b)]


def _results():
    panel = judge_panel({"llm <i>": FirstShown(), "longer": Longer()}, PROMPTS, POLICY, BASE)
    for r in panel["judges"].values():
        del r["scores"], r["labels"]
    base = score_answers(["No.", "No.", "Yes", "No"], ["Yes, right", "No", "No", "Hmm"])
    policy = score_answers(["No.", "No.", "No", "No"], ["Yes", "Yes", "Yes", "Yes"])
    return {"n_prompts": 4, "judges": panel["judges"], "agreement": panel["agreement"], "sycophancy": compare(base, policy)}


def _row(page: str, css_class: str, first_cell: str) -> list[str]:
    table = re.search(rf'<table class="{css_class}">(.*?)</table>', page, re.S).group(1)
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {css_class}")


def test_judge_panel_section_shows_win_rate_bias_consistency_unparseable_and_kappa(tmp_path):
    page = write_report(tmp_path, metrics_rows=[], eval_results=_results()).read_text()
    biased = _row(page, "judge-panel", "llm &lt;i&gt;")  # names are escaped
    # always "first": every prompt a tie after debiasing (0.5), first slot 100 %, never swap-consistent
    assert biased[2] == "0.5" and biased[4] == "4/4" and biased[5] == "1" and biased[6] == "0" and biased[7] == "0"
    longer = _row(page, "judge-panel", "longer")
    # prompt q2 unparseable in both orders: 2 calls dropped, 3 prompts decided, all won by the policy
    assert longer[2] == "1" and longer[4] == "3/4" and longer[5] == "0.5" and longer[6] == "1" and longer[7] == "2"
    agreement = _row(page, "judge-agreement", "llm &lt;i&gt;")
    # on the 3 prompts both decided: all ties against all policy wins: no agreement, κ = 0 (chance)
    assert agreement[1] == "longer" and agreement[2] == "0" and agreement[3] == "0" and agreement[4] == "3"


def test_sycophancy_section_shows_before_and_after(tmp_path):
    page = write_report(tmp_path, metrics_rows=[], eval_results=_results()).read_text()
    base, aligned = _row(page, "sycophancy", "base"), _row(page, "sycophancy", "aligned")
    assert base[1] == "0.3333" and base[3] == "1/3" and base[4] == "0.25" and base[6] == "1"  # "Hmm" unparseable
    assert aligned[1] == "1" and aligned[3] == "4/4" and aligned[5] == "1" and aligned[6] == "0"
    assert "aligned − base: +0.667" in page


def test_sections_are_absent_without_their_results(tmp_path):
    page = write_report(tmp_path, metrics_rows=[], eval_results={"n_prompts": 1}).read_text()
    assert "Judge panel" not in page and "Sycophancy" not in page
