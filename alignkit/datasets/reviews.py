"""Openings of movie reviews (the bundled ``reviews`` prompts), for the controlled-sentiment
experiment of the DPO paper (Rafailov et al. 2023, §6.1) at laptop scale.

Each opening is 2–8 tokens, written for this project from a small grammar (a subject and a
neutral start of a verdict: "The soundtrack was", "I rented this comedy and"), so the sentiment is
left to the model's continuation. A row is a conversational prompt asking to continue the review,
with the opening as its own column::

    {"prompt": [{"role": "user", "content": "Continue this movie review: The soundtrack was"}],
     "opening": "The soundtrack was", "id": "reviews-train-0000"}

Chat prompts, not bare text: the bundled model is instruction-tuned, and a reward model trained
on these pairs scores them through the same chat template. Openings are shuffled with the seed
and cut into disjoint test and train parts. ``python -m alignkit.datasets.reviews`` rewrites the
bundled files; a test checks the files equal what this module generates.
"""

from __future__ import annotations

import random
from pathlib import Path

from alignkit.datasets import write_splits

SEED = 29
DIRECTORY = Path(__file__).parent / "reviews"
INSTRUCTION = "Continue this movie review: "
SIZES = {"train": 320, "test": 128}

SUBJECTS = [
    "This movie", "The film", "This picture", "The sequel", "The remake", "This comedy", "This thriller",
    "This documentary", "The plot", "The acting", "The soundtrack", "The ending", "The script", "The cast",
    "The dialogue", "The first hour", "The director's latest", "This western", "The animation", "The lead actor",
    "The villain", "This musical", "The camera work", "The story", "This horror film", "The premise",
]
VERDICTS = ["was", "is", "felt", "seemed", "left me", "turned out", "made me", "kept me", "tries to be", "never quite",
            "really", "is simply", "starts out"]
SCENES = ["I watched this", "I rented this", "We saw this", "My kids watched this", "I went to see this",
          "I finally caught this", "Yesterday I saw this", "We streamed this"]
GENRES = ["movie", "film", "comedy", "sequel", "documentary", "drama", "cartoon", "western"]
ENDINGS = ["and", "twice and", "today and"]


def openings() -> list[str]:
    """Every opening of the grammar: subject + verdict, and scene + genre + ending."""
    return ([f"{s} {v}" for s in SUBJECTS for v in VERDICTS]
            + [f"{s} {g} {e}" for s in SCENES for g in GENRES for e in ENDINGS])


def generate(sizes: dict[str, int] = SIZES, seed: int = SEED) -> dict[str, list[dict]]:
    """The splits: the openings shuffled with ``seed``, test first, then train (disjoint)."""
    pool = openings()
    random.Random(seed).shuffle(pool)
    if sum(sizes.values()) > len(pool):
        raise ValueError(f"the grammar has {len(pool)} openings, fewer than the {sum(sizes.values())} asked for")
    parts = {"test": pool[: sizes["test"]], "train": pool[sizes["test"] : sizes["test"] + sizes["train"]]}
    return {split: [{"prompt": [{"role": "user", "content": INSTRUCTION + text}], "opening": text,
                     "id": f"reviews-{split}-{i:04d}"} for i, text in enumerate(rows)]
            for split, rows in parts.items()}


def write(directory: Path = DIRECTORY) -> None:
    write_splits(directory, "reviews", generate())


if __name__ == "__main__":
    write()
