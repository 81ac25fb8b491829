"""Best-of-N / rejection sampling: N samples per prompt, the best kept by a scorer, written as SFT data."""

from alignkit.bon.selection import SELECTORS, best_index, extract_answer, majority_index

__all__ = ["SELECTORS", "best_index", "extract_answer", "majority_index"]
