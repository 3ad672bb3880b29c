"""Small wording helpers shared by messages."""

from __future__ import annotations

from typing import Iterable


def ranks_label(ranks: Iterable[int]) -> str:
    """``rank 3`` or ``ranks 0, 2``."""
    ranks = list(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
