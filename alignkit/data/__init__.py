"""The data layer: typed records, readers and adapters, tokenisation with prompt masks, inspection.

Typical use::

    from alignkit.data import read_records, encode_dataset
    records = read_records("pairs.jsonl", "preference", skip_invalid=True).records
    encoded = encode_dataset(tokenizer, records, max_length=1024).items
"""

from alignkit.data.adapters import (
    from_hh_rlhf,
    from_ultrafeedback_binarized,
    hh_record,
    load_hh_rlhf,
    load_ultrafeedback_binarized,
    ultrafeedback_record,
)
from alignkit.data.chat import (
    EncodedBinary,
    EncodedPair,
    EncodedPrompt,
    EncodedSFT,
    encode_completion,
    encode_prompt,
    render_conversation,
    render_prompt,
    response_mask,
)
from alignkit.data.columns import KINDS, row_to_record
from alignkit.data.encode import EncodeResult, encode_dataset
from alignkit.data.errors import DataError, Origin
from alignkit.data.formats import (
    BinaryFeedback,
    PreferencePair,
    PromptOnly,
    Ranking,
    SFTExample,
    is_conversational,
)
from alignkit.data.inspect import inspect_file
from alignkit.data.rankings import RankingPairs, rankings_to_pairs
from alignkit.data.sources import ReadResult, collect_records, iter_records, read_records

__all__ = [
    "KINDS", "BinaryFeedback", "DataError", "EncodeResult", "EncodedBinary", "EncodedPair", "EncodedPrompt",
    "EncodedSFT", "Origin", "PreferencePair", "PromptOnly", "Ranking", "RankingPairs", "ReadResult", "SFTExample",
    "collect_records", "encode_completion", "encode_dataset", "encode_prompt", "from_hh_rlhf",
    "from_ultrafeedback_binarized", "hh_record", "inspect_file", "is_conversational", "iter_records",
    "load_hh_rlhf", "load_ultrafeedback_binarized", "rankings_to_pairs", "read_records", "render_conversation",
    "render_prompt", "response_mask", "row_to_record", "ultrafeedback_record",
]
