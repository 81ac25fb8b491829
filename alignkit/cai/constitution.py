"""A constitution: named principles, each with a critique prompt, a revision prompt and the
pairwise question a judge asks about it (Bai et al. 2022, "Constitutional AI").

    constitution = load_constitution("hhh")          # the bundled default, alignkit/cai/hhh.yaml
    constitution = load_constitution("mine.yaml")    # same shape: name, principles[...]
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

BUNDLED = {"hhh": Path(__file__).with_name("hhh.yaml")}


class Principle(BaseModel):
    name: str = Field(min_length=1)
    """A short identifier, used in reports."""
    critique: str = Field(min_length=1)
    """Asked after a response: what is wrong with it under this principle."""
    revision: str = Field(min_length=1)
    """Asked after the critique: rewrite the response to fix what the critique found."""
    comparison: str = Field(min_length=1)
    """The pairwise question for the constitution judge, e.g. "Which response is less harmful?"."""


class Constitution(BaseModel):
    name: str
    principles: list[Principle] = Field(min_length=1)


def load_constitution(spec: str | Path) -> Constitution:
    """A bundled constitution by name (``hhh``) or a YAML file; a clear error naming the file otherwise."""
    path = BUNDLED.get(str(spec), Path(spec))
    if not path.is_file():
        raise FileNotFoundError(f"constitution {spec!r}: no such file, and not a bundled name ({', '.join(BUNDLED)})")
    try:
        constitution = Constitution.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ValueError(f"constitution {path}: {exc}") from None
    names = [p.name for p in constitution.principles]
    if len(set(names)) != len(names):
        raise ValueError(f"constitution {path}: principle names must be unique, got {names}")
    return constitution
