"""Reward functions that need no model: sentiment, math answers, instruction constraints, the table."""

import functools
import json

import pytest

from alignkit.rewards import (
    REWARD_FUNCTIONS,
    constraint_failures,
    get_reward_function,
    instruction_constraints,
    math_answer,
    vader_sentiment,
)


def assistant(text):
    return [{"role": "assistant", "content": text}]


def test_vader_compound_scores():
    texts = ["I love this, it is wonderful!", "This is terrible and awful.", "The table is brown.", "good"]
    # VADER's published lexicon: "good" has valence 1.9 -> 1.9 / sqrt(1.9² + 15) = 0.4404.
    assert vader_sentiment(["p"] * 4, texts) == pytest.approx([0.8478, -0.7269, 0.0, 0.4404], abs=1e-4)
    assert vader_sentiment([[{"role": "user", "content": "p"}]], [assistant("good")]) == pytest.approx([0.4404], abs=1e-4)


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("So the answer is \\boxed{\\frac{3}{4}}.", "3/4", 1.0),
        ("x = 3/4", "0.75", 1.0),
        ("The answer is 0.5.", "\\frac{1}{2}", 1.0),
        ("The answer is 1000", "1,000", 1.0),
        ("\\boxed{3}", "$\\boxed{2}$", 0.0),
        ("I do not know.", "7", 0.0),
        ("Natalia sold 48 + 24 = 72 clips. \\boxed{72}", "48/2 = <<48/2=24>>24 clips in May.\n#### 72", 1.0),  # GSM8K
        ("So y = \\boxed{3}", "The answer is $x=5$ so y is 3.\n#### 3", 1.0),  # only what follows #### is the reference
        ("Simplified: \\boxed{1 + x}", "x+1", 1.0),
    ],
)
def test_math_answer_compares_final_answers(completion, answer, expected):
    assert math_answer(["q"], [completion], answer=[answer]) == [expected]


def test_math_answer_reads_the_column_and_skips_rows_without_a_reference():
    completions = ["\\boxed{4}", assistant("\\boxed{5}"), "\\boxed{4}"]
    assert math_answer(["q"] * 3, completions, solution=["4", "4", None]) == [1.0, 0.0, None]
    assert math_answer(["q"], ["\\boxed{4}"], answer_column="gold", gold=["4"], answer=["5"]) == [1.0]
    with pytest.raises(KeyError, match="'answer'"):
        math_answer(["q"], ["4"], other=["4"])


def test_each_constraint_checks_what_it_says():
    cases = {
        "max_words": ("one two three", 3, "one two three four", 3),
        "min_words": ("one two", 2, "one", 2),
        "max_sentences": ("One. Two! Three", 3, "One. Two? Three. Four.", 3),
        "min_sentences": ("Ends at 3.5 pounds. Then more.", 2, "Costs 3.5 pounds", 2),
        "include": ("The Ocean is deep", ["ocean"], "Oceans are deep", "ocean"),
        "exclude": ("Seas are deep", ["ocean"], "the OCEAN", ["ocean"]),
        "mentions": ("SEAS are deep", ["ocean", "sea", "seas"], "Oceanic trenches", ["ocean", "sea"]),
        "case": ("all lower, 123!", "lower", "Not lower", "lower"),
        "bullets": ("Intro\n- a\n* b\n  • c", 3, "- a\n- b\n-c", 3),
        "json": ('```json\n{"a": 1}\n```', True, "{'a': 1}", True),
        "json_keys": ('{"name": "x", "age": 3}', ["name", "age"], '["name", "age"]', ["name"]),
        "start_with": ("  Dear team, hi", "Dear team", "Hi. Dear team", "Dear team"),
        "end_with": ("Thanks. Any questions?\n", "Any questions?", "Any questions? Bye", "Any questions?"),
    }
    from alignkit.rewards.constraints import CHECKS

    assert set(cases) == set(CHECKS)
    for name, (good, good_value, bad, bad_value) in cases.items():
        assert constraint_failures(good, {name: good_value}) == [], name
        assert constraint_failures(bad, {name: bad_value}) == [name], name
    assert constraint_failures("ALL CAPS", {"case": "upper"}) == [] and constraint_failures("123", {"case": "upper"}) == ["case"]


def test_instruction_constraints_reward_per_row():
    rows = [
        {"max_words": 5, "include": ["rain"], "end_with": "Done."},
        json.dumps({"case": "lower", "bullets": 2}),  # JSON text works too
        None,
        {},
    ]
    completions = ["Rain falls softly today. Done.", assistant("- one\n- Two"), "anything", "anything"]
    assert instruction_constraints(["p"] * 4, completions, constraints=rows) == [1.0, 0.5, None, None]
    strict = functools.partial(instruction_constraints, all_or_nothing=True)
    assert strict(["p"] * 2, completions[:2], constraints=rows[:2]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown constraints \\['max_lines'\\]"):
        instruction_constraints(["p"], ["x"], constraints=[{"max_lines": 3}])


def test_reward_function_table():
    assert {"vader", "length", "math", "format", "code", "constraints"} <= set(REWARD_FUNCTIONS)
    assert REWARD_FUNCTIONS["vader"] is vader_sentiment and get_reward_function("math") is math_answer
    with pytest.raises(KeyError, match="known: code, constraints"):
        get_reward_function("nope")
    # Every entry follows the protocol: keyword call, one value per completion.
    columns = {"answer": ["4"], "constraints": [{"max_words": 3}], "tests": [["assert f() == 1"]]}
    completion = "```python\ndef f():\n    return 1\n```\nThe answer is \\boxed{4}."
    values = {name: fn(prompts=["p"], completions=[completion], completion_ids=[[1, 2]], **columns) for name, fn in REWARD_FUNCTIONS.items()}
    assert values["code"] == [1.0] and values["math"] == [1.0] and values["constraints"] == [0.0]
    assert values["format"] == [1.0] and values["length"] == [0.0] and len(values["vader"]) == 1
