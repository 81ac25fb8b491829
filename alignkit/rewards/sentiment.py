"""Sentiment of a completion with VADER (Hutto & Gilbert 2014), the reward of the classic
"generate positive movie reviews" RLHF experiment (Ziegler et al. 2019 used a classifier; VADER
is a lexicon and rule model: no weights to download, deterministic, fast)."""

from __future__ import annotations

import functools

from alignkit.rewards.protocol import completion_text


@functools.cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_sentiment(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """VADER's compound score of each completion's text, in [−1, 1]: the sum of its words'
    valence (with VADER's rules for negation, intensifiers, "but", caps and "!"), normalised as
    s / √(s² + 15). 0 for text with no sentiment words."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(completion_text(c))["compound"]) for c in completions]
