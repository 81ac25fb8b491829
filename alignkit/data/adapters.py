"""Adapters for two public preference datasets, from the hub or from a local copy.

- ``HuggingFaceH4/ultrafeedback_binarized`` (splits ``train_prefs``/``test_prefs``): columns
  ``prompt`` (str), ``prompt_id``, ``chosen``/``rejected`` (full conversations: [user,
  assistant]), ``messages`` (a copy of ``chosen``), ``score_chosen``, ``score_rejected``.
- ``Anthropic/hh-rlhf``: columns ``chosen``/``rejected``, whole transcripts
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that share every turn but the last reply.

Both become conversational :class:`PreferencePair` records. ``from_*`` read a local file (any
format :func:`read_records` reads) or a ``datasets.Dataset``; ``load_*`` fetch from the hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from alignkit.data.columns import Columns, split_shared_prefix
from alignkit.data.errors import DataError, Origin
from alignkit.data.formats import PreferencePair
from alignkit.data.sources import ReadResult, collect_records

ULTRAFEEDBACK_ID = "HuggingFaceH4/ultrafeedback_binarized"
HH_RLHF_ID = "Anthropic/hh-rlhf"
HH_ASSISTANT = "\n\nAssistant:"
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def ultrafeedback_record(value: dict, origin: Origin | None = None) -> PreferencePair:
    """One ultrafeedback_binarized row -> a pair; ``prompt_id`` and both scores go to ``meta``."""
    columns = Columns(value)
    chosen, rejected = columns.take("chosen"), columns.take("rejected")
    # Both are already represented: `prompt` is the first user turn of `chosen`, `messages` a copy
    # of `chosen`. Consumed here so `meta` does not hold each conversation twice.
    columns.take("prompt", required=False)
    columns.take("messages", required=False)
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list):
            raise DataError(f"expected the whole conversation (a list of messages), got {type(value).__name__}", field=name)
    prompt, chosen_reply, rejected_reply = split_shared_prefix(chosen, rejected)
    return PreferencePair(prompt, chosen_reply, rejected_reply, meta=columns.meta(), origin=origin)


def hh_transcript_to_messages(transcript: str, name: str = "chosen") -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c"`` -> user/assistant/user messages."""
    parts = HH_TURN.split(transcript)
    if parts[0].strip():
        raise DataError(f"transcript must start with '\\n\\nHuman:', starts with {parts[0][:30]!r}", field=name)
    # parts = ["", role, content, role, content, ...]
    messages = [{"role": HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    if not messages or messages[-1]["role"] != "user":
        raise DataError("the shared part of the transcript must end with a Human turn", field=name)
    return messages


def hh_record(value: dict, origin: Origin | None = None) -> PreferencePair:
    """One hh-rlhf row -> a pair: the shared transcript is the prompt, the last replies the responses.

    The split is at the last ``"\\n\\nAssistant:"`` inside the longest common prefix of the two
    transcripts, so multi-turn conversations keep all earlier turns in the prompt.
    """
    columns = Columns(value)
    chosen, rejected = columns.take("chosen"), columns.take("rejected")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str):
            raise DataError(f"expected a transcript string, got {type(text).__name__}", field=name)
        if not text.startswith("\n\nHuman:"):
            raise DataError(f"expected a transcript starting with '\\n\\nHuman:', starts with {text[:30]!r}", field=name)
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        raise DataError("shares no '\\n\\nAssistant:' turn with 'rejected'", field="chosen")
    replies = {}
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        reply = text[cut + len(HH_ASSISTANT) :]
        if "\n\nHuman:" in reply:
            # The transcripts part ways before the final reply: no single prompt to compare on.
            raise DataError("differs from the other transcript before its final Assistant turn", field=name)
        replies[name] = [{"role": "assistant", "content": reply.strip()}]
    prompt = hh_transcript_to_messages(chosen[:cut])
    return PreferencePair(prompt, replies["chosen"], replies["rejected"], meta=columns.meta(), origin=origin)


def from_ultrafeedback_binarized(
    source: str | Path | Any, *, skip_invalid: bool = False, rejects_path: str | Path | None = None,
    source_name: str | None = None,
) -> ReadResult:
    """Pairs from a local file or Dataset in the ultrafeedback_binarized schema."""
    return collect_records(source, ultrafeedback_record, skip_invalid=skip_invalid, rejects_path=rejects_path, source_name=source_name)


def from_hh_rlhf(
    source: str | Path | Any, *, skip_invalid: bool = False, rejects_path: str | Path | None = None,
    source_name: str | None = None,
) -> ReadResult:
    """Pairs from a local file or Dataset in the hh-rlhf schema."""
    return collect_records(source, hh_record, skip_invalid=skip_invalid, rejects_path=rejects_path, source_name=source_name)


def load_ultrafeedback_binarized(split: str = "train_prefs", *, skip_invalid: bool = False,
                                 rejects_path: str | Path | None = None, **load_kwargs) -> ReadResult:
    """Download (or read the hub cache of) ultrafeedback_binarized and adapt it. Needs the hub."""
    import datasets

    dataset = datasets.load_dataset(ULTRAFEEDBACK_ID, split=split, **load_kwargs)
    return from_ultrafeedback_binarized(dataset, skip_invalid=skip_invalid, rejects_path=rejects_path,
                                        source_name=f"{ULTRAFEEDBACK_ID}:{split}")


def load_hh_rlhf(split: str = "train", *, data_dir: str | None = None, skip_invalid: bool = False,
                 rejects_path: str | Path | None = None, **load_kwargs) -> ReadResult:
    """Download (or read the hub cache of) hh-rlhf (``data_dir`` picks a subset, e.g. "helpful-base")."""
    import datasets

    dataset = datasets.load_dataset(HH_RLHF_ID, data_dir=data_dir, split=split, **load_kwargs)
    return from_hh_rlhf(dataset, skip_invalid=skip_invalid, rejects_path=rejects_path,
                        source_name=f"{HH_RLHF_ID}:{split}")
