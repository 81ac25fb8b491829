"""Instruction-following prompts with constraints that code checks (the bundled ``constraints`` set),
generated with a fixed seed, in the spirit of IFEval (Zhou et al. 2023).

Each row is a conversational prompt whose instructions are spelled out in words and repeated as
data in the ``constraints`` column, which the ``constraints`` reward reads
(``alignkit/rewards/constraints.py``)::

    {"prompt": [{"role": "user", "content": "Write a short note about coffee. Answer in at most 20 words."}],
     "constraints": {"max_words": 20, "mentions": ["coffee"]}, "id": "constraints-test-0000", "kinds": ["max_words"]}

A prompt is a task about a topic plus one or two compatible constraints. Topics are split
between train and test, so no held-out prompt shares a topic with a training one.
``python -m alignkit.datasets.constraints`` rewrites the bundled files; a test checks that the
files equal what this module generates.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from alignkit.datasets import write_splits

SEED = 17
DIRECTORY = Path(__file__).parent / "constraints"
SIZES = {"train": 600, "test": 200}

TOPICS = [
    "coffee", "the ocean", "a rainy day", "bicycles", "the moon", "gardening", "libraries", "winter",
    "trains", "honeybees", "mountains", "bread", "friendship", "the desert", "volcanoes", "music lessons",
    "city parks", "owls", "recycling", "camping", "chess", "rivers", "tea", "lighthouses", "autumn leaves",
    "museums", "penguins", "kites", "thunderstorms", "old maps", "sunflowers", "the night sky", "markets",
    "bridges", "cats", "snow", "soup", "forests", "clocks", "islands",
]
# Every task asks about its topic, so every row also checks, unstated, that the answer names it
# (any of these words): without it, "That is all." alone met "end with 'That is all.'" and GRPO
# learned to answer with the phrase and nothing else (docs/grpo.md).
TOPIC_WORDS = {
    "coffee": ["coffee"], "the ocean": ["ocean", "oceans", "sea"], "a rainy day": ["rain", "rainy", "raining"],
    "bicycles": ["bicycle", "bicycles", "bike", "bikes", "cycling"], "the moon": ["moon"],
    "gardening": ["garden", "gardens", "gardening"], "libraries": ["library", "libraries"], "winter": ["winter"],
    "trains": ["train", "trains"], "honeybees": ["honeybee", "honeybees", "bee", "bees"],
    "mountains": ["mountain", "mountains"], "bread": ["bread"], "friendship": ["friend", "friends", "friendship"],
    "the desert": ["desert", "deserts"], "volcanoes": ["volcano", "volcanoes", "volcanos"],
    "music lessons": ["music", "lesson", "lessons"], "city parks": ["park", "parks"], "owls": ["owl", "owls"],
    "recycling": ["recycle", "recycled", "recycling"], "camping": ["camp", "camping", "campsite"], "chess": ["chess"],
    "rivers": ["river", "rivers"], "tea": ["tea", "teas"], "lighthouses": ["lighthouse", "lighthouses"],
    "autumn leaves": ["autumn", "leaf", "leaves"], "museums": ["museum", "museums"], "penguins": ["penguin", "penguins"],
    "kites": ["kite", "kites"], "thunderstorms": ["thunderstorm", "thunderstorms", "storm", "storms", "thunder"],
    "old maps": ["map", "maps"], "sunflowers": ["sunflower", "sunflowers"], "the night sky": ["sky", "night"],
    "markets": ["market", "markets"], "bridges": ["bridge", "bridges"], "cats": ["cat", "cats"], "snow": ["snow"],
    "soup": ["soup", "soups"], "forests": ["forest", "forests"], "clocks": ["clock", "clocks"],
    "islands": ["island", "islands"],
}
TASKS = ["Write a short note about {topic}.", "Describe {topic}.", "Tell me something interesting about {topic}.",
         "Give advice to someone who is curious about {topic}."]

# kind -> (instruction text, constraints) choices; {x} filled per prompt.
KINDS: dict[str, list[tuple[str, dict]]] = {
    "max_words": [(f"Answer in at most {n} words.", {"max_words": n}) for n in (15, 25, 40)],
    "include": [(f"Use the word '{w}' in your answer.", {"include": [w]}) for w in ("blue", "quiet", "morning", "simple")],
    "exclude": [(f"Do not use the word '{w}'.", {"exclude": [w]}) for w in ("the", "is", "and")],
    "lower": [("Write only in lowercase letters.", {"case": "lower"})],
    "upper": [("Write only in capital letters.", {"case": "upper"})],
    "bullets": [(f"Answer with exactly {n} bullet points, each line starting with '- '.", {"bullets": n}) for n in (2, 3)],
    "end_with": [(f"End your answer with the exact phrase '{p}'", {"end_with": p}) for p in ("Any questions?", "That is all.")],
    "start_with": [(f"Start your answer with the word '{p}'", {"start_with": p}) for p in ("Sure", "Well")],
    "max_sentences": [(f"Use at most {n} sentences.", {"max_sentences": n}) for n in (1, 2)],
    "json_keys": [('Answer with a JSON object with the keys "title" and "text", and nothing else.', {"json_keys": ["title", "text"]})],
}
# Pairs that cannot both hold, or whose checks disagree on what counts (a bullet is not a sentence).
CONFLICTS = {frozenset(p) for p in [
    ("lower", "upper"), ("json_keys", "bullets"), ("json_keys", "end_with"), ("json_keys", "start_with"),
    ("json_keys", "upper"), ("json_keys", "max_sentences"), ("bullets", "max_sentences"), ("bullets", "start_with"),
    ("lower", "start_with"), ("upper", "start_with"), ("lower", "end_with"), ("upper", "end_with"),
    ("lower", "include"), ("upper", "include"), ("upper", "exclude"),
]}
SINGLES = [(k,) for k in KINDS]
PAIRS = [pair for pair in itertools.combinations(KINDS, 2) if frozenset(pair) not in CONFLICTS]
SINGLE_SHARE = 0.5
"""Share of prompts with one constraint (the rest have two): sized from the measured base rates (datasheet)."""


def generate(sizes: dict[str, int] = SIZES, seed: int = SEED) -> dict[str, list[dict]]:
    """The splits: topics shuffled and cut (a quarter for test), then per row a task, a topic of the
    split and one constraint kind (``SINGLE_SHARE`` of rows) or a compatible pair, each drawn with ``seed``;
    plus the unstated ``mentions`` check that the answer names the topic (``kinds`` lists the stated ones)."""
    rng = random.Random(seed)
    topics = TOPICS[:]
    rng.shuffle(topics)
    cut = len(topics) // 4
    split_topics = {"test": topics[:cut], "train": topics[cut:]}
    out: dict[str, list[dict]] = {}
    for split in ("test", "train"):
        rows, seen = [], set()
        while len(rows) < sizes[split]:
            template, topic = rng.choice(TASKS), rng.choice(split_topics[split])
            task = template.format(topic=topic)
            kinds = rng.choice(SINGLES if rng.random() < SINGLE_SHARE else PAIRS)
            choices = [rng.choice(KINDS[k]) for k in kinds]
            content = " ".join([task, *(text for text, _ in choices)])
            if content in seen:
                continue
            seen.add(content)
            constraints = {key: value for _, c in choices for key, value in c.items()} | {"mentions": TOPIC_WORDS[topic]}
            rows.append({"prompt": [{"role": "user", "content": content}], "constraints": constraints,
                         "id": f"constraints-{split}-{len(rows):04d}", "kinds": list(kinds)})
        out[split] = rows
    return {"train": out["train"], "test": out["test"]}


def write(directory: Path = DIRECTORY) -> None:
    write_splits(directory, "constraints", generate())


if __name__ == "__main__":
    write()
