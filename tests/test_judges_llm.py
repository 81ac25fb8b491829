"""The pairwise LLM judge, the constitution judge, the judge panel (position bias, unparseable
answers, Cohen's κ) and --judge specs; chat models are scripted fakes unless a test says otherwise."""

import math

import pytest

from alignkit.cai import load_constitution
from alignkit.eval.judging import cohen_kappa, judge_panel
from alignkit.judges.constitution import ConstitutionJudge
from alignkit.judges.llm import PROMPT, QUESTION, LLMJudge, judge_messages, parse_verdict

PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
POLICY = ["a long and careful answer number %d" % i for i in range(6)]
BASE = ["short %d" % i for i in range(6)]


class Scripted:
    """A chat backend whose reply is ``reply(messages)``; records what it was asked."""

    name = "scripted"

    def __init__(self, reply):
        self.reply, self.asked = reply, []

    def chat(self, conversations, *, max_tokens=16, temperature=0.0, seed=0):
        self.asked.extend(conversations)
        return [self.reply(c) for c in conversations]


def shown(messages) -> tuple[str, str]:
    """(response A, response B) as they appear in a judge prompt."""
    text = messages[-1]["content"]
    a = text.split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
    b = text.split("[Response B]\n", 1)[1].split("\n\n", 1)[0]
    return a, b


def prefers_longer(messages):
    a, b = shown(messages)
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B.", "B"), ("(C)", "C"), ("Response B is better", "B"), ("answer: A", "A"), ("The verdict is C", "C"),
    ("**A**", "A"), ("I think A", None), ("a good point", None), ("As an AI", None), ("AB", None), ("", None), (None, None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_prompt_is_the_documented_one():
    messages = judge_messages(PROMPTS[0], "first", "second")
    user = messages[-1]["content"]
    assert QUESTION == "Which response is more helpful?" and QUESTION in user
    assert user == PROMPT.format(conversation="User: question 0", response_a="first", response_b="second", question=QUESTION)
    assert shown(messages) == ("first", "second")


def test_llm_judge_values_and_counts():
    replies = iter(["A", "B", "C", "no idea", "B", "A"])
    judge = LLMJudge(Scripted(lambda _: next(replies)))
    values = judge.judge(PROMPTS, POLICY, BASE)
    assert values[:3] == [1.0, 0.0, 0.5] and math.isnan(values[3]) and values[4:] == [0.0, 1.0]
    assert (judge.counts.first, judge.counts.second, judge.counts.tie, judge.counts.unparseable) == (2, 2, 1, 1)
    assert judge.counts.examples_unparseable == ["no idea"]


def test_panel_cancels_a_judge_that_always_says_a():
    always_a = LLMJudge(Scripted(lambda _: "A"))
    fair = LLMJudge(Scripted(prefers_longer))
    panel = judge_panel({"always_a": always_a, "fair": fair}, PROMPTS, POLICY, BASE)
    biased, honest = panel["judges"]["always_a"], panel["judges"]["fair"]
    # Always "A": the policy wins when shown first and loses when shown second → every prompt a tie.
    assert biased["win_rate"]["win_rate"] == 0.5 and biased["win_rate"]["ties"] == 6
    assert biased["position"]["first_preferred_rate"] == 1.0 and biased["position"]["swap_consistency"] == 0.0
    # The fair judge picks the longer (policy) answer in both orders.
    assert honest["win_rate"]["win_rate"] == 1.0 and honest["position"]["swap_consistency"] == 1.0
    assert honest["position"]["first_preferred_rate"] == 0.5
    (pair,) = panel["agreement"]
    assert pair["judges"] == ["always_a", "fair"] and pair["n"] == 6 and pair["raw_agreement"] == 0.0
    assert pair["kappa"] is None or pair["kappa"] <= 0  # all ties vs all wins: no agreement beyond chance


def test_panel_drops_and_counts_unparseable_prompts_instead_of_tying_them():
    def reply(messages):
        a, b = shown(messages)
        if "number 0" in a + b:  # prompt 0: the judge rambles in both orders
            return "Well, it depends."
        if "number 1" in a and a.startswith("a long"):  # prompt 1: rambles only with the policy first
            return "hmm"
        return prefers_longer(messages)

    result = judge_panel({"llm": LLMJudge(Scripted(reply))}, PROMPTS, POLICY, BASE)["judges"]["llm"]
    assert result["n_decided"] == 4 and result["unparseable_calls"] == 3
    assert result["win_rate"]["n"] == 4 and result["win_rate"]["ties"] == 0 and result["win_rate"]["win_rate"] == 1.0
    assert result["labels"][:2] == [None, None] and result["scores"][0] is None


def test_order_invariant_judges_are_asked_once():
    class Pointwise:
        order_invariant = True
        calls = 0

        def judge(self, prompts, a, b):
            Pointwise.calls += 1
            return [0.9 if len(x) > len(y) else 0.1 for x, y in zip(a, b)]

    result = judge_panel({"rm": Pointwise()}, PROMPTS, POLICY, BASE)["judges"]["rm"]
    assert Pointwise.calls == 1 and result["position"]["swap_consistency"] == 1.0 and result["win_rate"]["win_rate"] == 1.0


def test_cohen_kappa_by_hand():
    # Wikipedia's worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → κ = 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # p_o = 3/4, p_e = ½·¼ + ½·¾ = ½ → κ = ½.
    assert cohen_kappa(["y", "y", "n", "n"], ["y", "n", "n", "n"]) == pytest.approx(0.5)
    assert cohen_kappa(["y", "n", "y"], ["y", "n", "y"]) == 1.0
    assert cohen_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0)
    assert cohen_kappa([], []) is None and cohen_kappa(["t", "t"], ["t", "t"]) is None
    with pytest.raises(ValueError):
        cohen_kappa(["y"], [])


def test_kappa_between_judges_in_the_panel():
    fair = LLMJudge(Scripted(prefers_longer))
    contrarian = LLMJudge(Scripted(lambda m: {"A": "B", "B": "A", "C": "C"}[prefers_longer(m)]))
    policy = POLICY[:3] + ["s"] * 3  # the policy is longer on half the prompts: both labels occur
    panel = judge_panel({"fair": fair, "same": LLMJudge(Scripted(prefers_longer)), "contrarian": contrarian},
                        PROMPTS, policy, BASE)
    kappas = {tuple(p["judges"]): p["kappa"] for p in panel["agreement"]}
    assert kappas[("fair", "same")] == pytest.approx(1.0)
    assert kappas[("fair", "contrarian")] == pytest.approx(-1.0)


def test_constitution_judge_asks_every_principle_and_averages():
    constitution = load_constitution("hhh")
    names = [p.name for p in constitution.principles]
    assert names == ["helpful", "honest", "harmless", "not_evasive"]

    def reply(messages):
        text = messages[-1]["content"]
        if constitution.principles[0].comparison in text:
            return "A"
        if constitution.principles[1].comparison in text:
            return "B"
        if constitution.principles[2].comparison in text:
            return "C"
        return "unclear"

    backend = Scripted(reply)
    judge = ConstitutionJudge(backend, constitution)
    scores = judge.judge(PROMPTS[:2], POLICY[:2], BASE[:2])
    assert len(backend.asked) == 2 * len(names)  # one batched call: every principle × every pair
    assert scores == [pytest.approx((1 + 0 + 0.5) / 3)] * 2  # the unparseable principle is left out
    assert judge.per_principle["not_evasive"] == [None, None]
    assert judge.counts["honest"].second == 2


def test_constitution_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprinciples:\n  - name: a\n    critique: c\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_constitution(bad)
    with pytest.raises(FileNotFoundError, match="hhh"):
        load_constitution(tmp_path / "missing.yaml")


def test_judge_specs(tiny_dir, tmp_path):
    from alignkit.judges import RewardModelJudge
    from alignkit.judges.chat import LocalChat
    from alignkit.judges.spec import is_reward_model, load_judge
    from alignkit.models.heads import load_scalar_model

    rm, tokenizer = load_scalar_model(tiny_dir)
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    assert is_reward_model(str(tmp_path / "rm")) and not is_reward_model(tiny_dir)
    assert isinstance(load_judge(str(tmp_path / "rm")), RewardModelJudge)
    llm = load_judge(tiny_dir)
    assert isinstance(llm, LLMJudge) and isinstance(llm.backend, LocalChat)
    assert isinstance(load_judge(f"constitution:{tiny_dir}"), ConstitutionJudge)
    verdicts = llm.verdicts(PROMPTS[:2], POLICY[:2], BASE[:2])  # a random model: whatever it says is tallied
    assert len(verdicts) == 2 and sum(vars(llm.counts)[k] for k in ("first", "second", "tie", "unparseable")) == 2
