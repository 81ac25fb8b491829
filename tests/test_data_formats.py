"""Typed records: shapes, validation, and K-way rankings -> pairs."""

import dataclasses
import math

import pytest

from alignkit.data import (
    BinaryFeedback,
    DataError,
    PreferencePair,
    PromptOnly,
    Ranking,
    SFTExample,
    is_conversational,
    rankings_to_pairs,
)

USER = [{"role": "user", "content": "Pick one."}]


def reply(text):
    return [{"role": "assistant", "content": text}]


def test_records_keep_the_shape_they_are_given():
    standard = PreferencePair("2 + 2 =", " 4", " 5", meta={"id": 7})
    conversational = PreferencePair(USER, reply("A"), reply("B"))
    assert standard.chosen == " 4" and standard.meta == {"id": 7}
    assert conversational.prompt == USER and conversational.rejected == reply("B")
    assert not is_conversational(standard) and is_conversational(conversational)
    assert is_conversational({"messages": USER + reply("x")}) and not is_conversational({"prompt": "text"})


def test_records_are_frozen():
    record = SFTExample("Say hi.", " hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.prompt = "other"


def test_all_kinds_construct():
    assert BinaryFeedback(USER, reply("ok"), True).label is True
    assert PromptOnly(USER).answer is None
    assert PromptOnly("Q: 6 x 7?", "42").answer == "42"


@pytest.mark.parametrize(
    "build, field, words",
    [
        (lambda: PreferencePair("p", "same", " same "), "chosen", "identical to 'rejected'"),
        (lambda: PreferencePair(USER, reply("a"), "b"), "rejected", "expected a list of messages"),
        (lambda: PreferencePair("p", reply("a"), "b"), "chosen", "expected text"),
        (lambda: PreferencePair(USER, reply("a"), [{"role": "user", "content": "b"}]), "rejected", "role 'assistant'"),
        (lambda: SFTExample("", "x"), "prompt", "empty"),
        (lambda: BinaryFeedback("p", "c", "yes"), "label", "true or false"),
        (lambda: PromptOnly("p", 42), "answer", "expected text"),
        (lambda: Ranking("p", ["a"], [1.0]), "responses", "at least 2"),
        (lambda: Ranking("p", ["a", "b"], [1.0]), "scores", "2 numbers"),
        (lambda: Ranking("p", ["a", "b"], [1.0, math.nan]), "scores", "finite"),
        (lambda: Ranking("p", ["a", "a"], [1.0, 2.0]), "responses", "identical"),
    ],
)
def test_invalid_records_name_the_field(build, field, words):
    with pytest.raises(DataError) as caught:
        build()
    assert caught.value.field == field
    assert f"field '{field}'" in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_ranking_gives_all_pairs(k):
    responses = [f"response {i}" for i in range(k)]
    scores = [float(i) for i in range(k)]  # all different: no ties
    pairs = Ranking("p", responses, scores).to_pairs()
    assert len(pairs) == k * (k - 1) // 2
    for pair in pairs:
        assert pair.meta["score_chosen"] > pair.meta["score_rejected"]
        assert scores[responses.index(pair.chosen)] > scores[responses.index(pair.rejected)]
    assert len({(p.chosen, p.rejected) for p in pairs}) == len(pairs)


def test_ranking_ties_are_skipped_and_counted():
    ranking = Ranking(USER, [reply("a"), reply("b"), reply("c"), reply("d")], [2, 1, 1, 2], meta={"id": "r1"})
    pairs = ranking.to_pairs()
    # 6 pairs in all; (a, d) and (b, c) tie.
    assert ranking.n_ties == 2 and len(pairs) == 4
    assert all(p.meta["id"] == "r1" for p in pairs)
    expanded = rankings_to_pairs([ranking, Ranking("p", ["x", "y", "z"], [1, 1, 1])])
    assert (expanded.n_rankings, len(expanded.pairs), expanded.n_ties) == (2, 4, 5)
