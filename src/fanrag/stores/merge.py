"""Merging per-shard results into a global top-k, for the sharded vector stores.

Same rule as ``fanrag.retrieve.merge_shards`` (which could import this one: stores sit below retrieve).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .base import ScoredId


def merge_shards(parts: Iterable[Iterable[ScoredId]], k: int) -> list[ScoredId]:
    """Global top-k from each shard's local top-k: best score per chunk id, highest first."""
    best: dict[str, ScoredId] = {}
    for part in parts:
        for hit in part:
            if hit.chunk_id not in best or hit.score > best[hit.chunk_id].score:
                best[hit.chunk_id] = hit
    return heapq.nlargest(k, best.values(), key=lambda h: h.score)
