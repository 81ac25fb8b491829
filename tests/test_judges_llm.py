"""The pairwise LLM judge, the constitution judge, the judge panel (position bias, unparseable
answers, Cohen's κ) and --judge specs; chat models are scripted fakes unless a test says otherwise.
Letter verdicts parse scripted replies; probability verdicts read scripted letter probabilities."""

import math

import pytest

from alignkit.cai import load_constitution
from alignkit.eval.judging import cohen_kappa, judge_panel
from alignkit.judges.constitution import ConstitutionJudge
from alignkit.judges.llm import PROMPT, QUESTION, LLMJudge, judge_messages, parse_verdict, preference_from_letter_probs

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
    judge = LLMJudge(Scripted(lambda _: next(replies)), verdict="letter")
    values = judge.judge(PROMPTS, POLICY, BASE)
    assert values[:3] == [1.0, 0.0, 0.5] and math.isnan(values[3]) and values[4:] == [0.0, 1.0]
    assert (judge.counts.first, judge.counts.second, judge.counts.tie, judge.counts.unparseable) == (2, 2, 1, 1)
    assert judge.counts.examples_unparseable == ["no idea"]


def test_panel_cancels_a_judge_that_always_says_a():
    always_a = LLMJudge(Scripted(lambda _: "A"), verdict="letter")
    fair = LLMJudge(Scripted(prefers_longer), verdict="letter")
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

    result = judge_panel({"llm": LLMJudge(Scripted(reply), verdict="letter")}, PROMPTS, POLICY, BASE)["judges"]["llm"]
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
    fair = LLMJudge(Scripted(prefers_longer), verdict="letter")
    contrarian = LLMJudge(Scripted(lambda m: {"A": "B", "B": "A", "C": "C"}[prefers_longer(m)]), verdict="letter")
    policy = POLICY[:3] + ["s"] * 3  # the policy is longer on half the prompts: both labels occur
    panel = judge_panel({"fair": fair, "same": LLMJudge(Scripted(prefers_longer), verdict="letter"), "contrarian": contrarian},
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
    judge = ConstitutionJudge(backend, constitution, verdict="letter")
    scores = judge.judge(PROMPTS[:2], POLICY[:2], BASE[:2])
    assert len(backend.asked) == 2 * len(names)  # one batched call: every principle × every pair
    assert scores == [pytest.approx((1 + 0 + 0.5) / 3)] * 2  # the unparseable principle is left out
    assert all(math.isnan(v) for v in judge.per_principle["not_evasive"]) and judge.per_principle["helpful"] == [1.0, 1.0]
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
    lazy = load_judge(str(tmp_path / "rm"))
    # The judge's model loads at its first score, so evaluation can generate without it in memory.
    assert isinstance(lazy, RewardModelJudge) and lazy._model is None
    eager = RewardModelJudge(rm.eval(), tokenizer)
    assert lazy.score(PROMPTS[:2], POLICY[:2]) == pytest.approx(eager.score(PROMPTS[:2], POLICY[:2]), abs=1e-5)
    assert lazy._model is not None
    llm = load_judge(tiny_dir)
    assert isinstance(llm, LLMJudge) and isinstance(llm.backend, LocalChat)
    assert isinstance(load_judge(f"constitution:{tiny_dir}"), ConstitutionJudge)
    assert llm.verdict == "probability"
    values = llm.judge(PROMPTS[:2], POLICY[:2], BASE[:2])
    # A random model spreads its mass over 49k tokens: the letters get ~1e-4, far below 0.1, so
    # both calls are unparseable (NaN), never a guessed verdict; the tally says so.
    counts = llm.counts.as_dict()
    assert all(math.isnan(v) for v in values) and counts["unparseable"] == 2 and counts["mean_letter_mass"] < 0.01
    assert counts["examples_unparseable"][0].startswith("letter mass")


class LetterProbs:
    """A chat backend that answers ``letter_probs`` with ``probs(messages)``; it has no ``chat``."""

    name = "letter-probs"

    def __init__(self, probs):
        self.probs, self.asked = probs, []

    def letter_probs(self, conversations, letters=("A", "B", "C")):
        self.asked.extend(conversations)
        return [self.probs(c) for c in conversations]


def test_probability_verdict_is_the_formula_and_counts_the_argmax():
    table = [
        {"A": 0.6, "B": 0.2, "C": 0.1},  # (0.6 + 0.05) / 0.9
        {"A": 0.1, "B": 0.5, "C": 0.3},  # (0.1 + 0.15) / 0.9
        {"A": 0.0, "B": 0.0, "C": 0.4},  # a sure tie: 0.2 / 0.4
        {"A": 0.05, "B": 0.02, "C": 0.01},  # mass 0.08 < 0.1: not an answer
        None,  # the backend had no probabilities
        {"A": 0.3, "B": 0.3, "C": 0.3},  # 0.45 / 0.9 = 0.5
    ]
    rows = iter(table)
    judge = LLMJudge(LetterProbs(lambda _: next(rows)))
    values = judge.judge(PROMPTS, POLICY, BASE)
    assert values[:3] == [pytest.approx(0.65 / 0.9), pytest.approx(0.25 / 0.9), 0.5]
    assert math.isnan(values[3]) and math.isnan(values[4]) and values[5] == pytest.approx(0.5)
    counts = judge.counts.as_dict()
    # argmax letter per decided call: A, B, C, then A for the three-way draw (the first of equals)
    assert (counts["first"], counts["second"], counts["tie"], counts["unparseable"]) == (2, 1, 1, 2)
    assert counts["mean_letter_mass"] == pytest.approx((0.9 + 0.9 + 0.4 + 0.08 + 0.9) / 5)  # None has no mass
    assert counts["examples_unparseable"] == ["letter mass 0.08", "<no letter probabilities>"]


@pytest.mark.parametrize("mass, decided", [(0.1, True), (0.0999, False), (0.0, False), (1e-4, False), (1.0, True)])
def test_letter_mass_threshold(mass, decided):
    probs = {"A": 0.5 * mass, "B": 0.3 * mass, "C": 0.2 * mass}
    value = preference_from_letter_probs(probs)
    assert math.isnan(value) != decided
    if decided:
        assert value == pytest.approx(0.6)
    assert math.isnan(preference_from_letter_probs(probs, min_letter_mass=max(mass, 1e-9) * 1.01))
    assert not math.isnan(preference_from_letter_probs({"A": 0.3, "B": 0.1, "C": 0.1}, min_letter_mass=0.5))


# Fixed preferences for the first slot (p > 0.5) and for the second (p < 0.5). Evaluated left to right,
# (p_ab + 1 − p_ba) / 2 misses 0.5 for a quarter of all p (p + 1 is rounded), e.g. p = 0.75 and 0.36 here;
# p_ab + (1 − p_ba) never does (position_debiased_scores).
MARGINS = [{"A": a, "B": b, "C": c} for a, b, c in [(0.61, 0.29, 0.1), (0.7, 0.2, 0.1), (0.1, 0.7, 0.2), (0.13, 0.55, 0.32),
                                                  (0.333, 0.3, 0.2), (0.9, 0.05, 0.05), (0.21, 0.49, 0.3)]]


@pytest.mark.parametrize("probs", MARGINS)
def test_debiasing_a_judge_with_a_fixed_position_preference_gives_exactly_half(probs):
    """The judge's P(first ≻ second) is the same whatever is shown: every prompt is an exact tie."""
    from alignkit.cai.label import label_pairs

    judge = LLMJudge(LetterProbs(lambda _: probs))
    result = judge_panel({"biased": judge}, PROMPTS, POLICY, BASE)["judges"]["biased"]
    assert result["scores"] == [0.5] * 6 and result["win_rate"]["ties"] == 6 and result["win_rate"]["win_rate"] == 0.5

    class Policy:
        name = "policy"

        def chat(self, conversations, *, max_tokens=16, temperature=0.0, seed=0):
            return [f"answer {seed} to {c[0]['content']}" for c in conversations]

    rows, stats = label_pairs(Policy(), LLMJudge(LetterProbs(lambda _: probs)), PROMPTS)
    assert rows == [] and stats["ties"] == 6 and stats["decidedness"] == 0.0


def test_probability_verdicts_follow_the_judge_and_cancel_its_position_bias():
    def probs(messages):  # prefers the longer answer, and the first slot by 0.1 on top
        a, b = shown(messages)
        longer_first = len(a) > len(b)
        return {"A": 0.5 if longer_first else 0.2, "B": 0.2 if longer_first else 0.5, "C": 0.1}

    result = judge_panel({"llm": LLMJudge(LetterProbs(probs))}, PROMPTS, POLICY, BASE)["judges"]["llm"]
    # p_ab = (0.5 + 0.05) / 0.8, p_ba = (0.2 + 0.05) / 0.8 → s = 0.5 + (0.6875 − 0.3125) / 2
    assert result["scores"] == [pytest.approx(0.6875)] * 6 and result["win_rate"]["win_rate"] == 1.0


def test_constitution_judge_averages_probability_verdicts_over_decided_principles():
    constitution = load_constitution("hhh")
    per_question = {p.comparison: v for p, v in zip(constitution.principles, [
        {"A": 0.8, "B": 0.1, "C": 0.1}, {"A": 0.2, "B": 0.6, "C": 0.2}, {"A": 0.01, "B": 0.01, "C": 0.01}, None])}

    def probs(messages):
        return next(v for q, v in per_question.items() if q in messages[-1]["content"])

    backend = LetterProbs(probs)
    judge = ConstitutionJudge(backend, constitution)
    scores = judge.judge(PROMPTS[:2], POLICY[:2], BASE[:2])
    assert len(backend.asked) == 8
    assert scores == [pytest.approx((0.85 + 0.3) / 2)] * 2  # harmless (mass 0.03) and not_evasive (None) left out
    assert judge.counts["harmless"].unparseable == 2 and judge.counts["not_evasive"].mean_letter_mass is None
    assert judge.counts["helpful"].first == 2 and judge.counts["honest"].second == 2


def test_probability_verdicts_need_a_backend_that_gives_them():
    with pytest.raises(TypeError, match="verdict='letter'"):
        LLMJudge(Scripted(lambda _: "A")).judge(PROMPTS, POLICY, BASE)
    with pytest.raises(ValueError, match="verdict"):
        LLMJudge(Scripted(lambda _: "A"), verdict="argmax")
