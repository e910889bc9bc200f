"""Length-sorted batching, shared by every embedder backend.

Padding makes a batch cost ``batch_size x longest``; sorting by length first keeps similar lengths
together, so a batch of short chunks is not padded to the one long chunk. The output rows come back in
the caller's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def embed_sorted(embed_batch: Callable[[Sequence[T]], np.ndarray], items: Sequence[T], batch_size: int,
                 lengths: Sequence[int] | None = None, dim: int = 0) -> np.ndarray:
    """Embed ``items`` in batches of ``batch_size``, shortest first; rows in input order.

    ``items`` are usually texts; a backend that has already tokenised may pass its encodings and their
    token ``lengths`` instead (then ``embed_batch`` must accept encodings). Without ``lengths``, items are
    sorted by ``len()`` (characters for texts). ``dim`` only shapes the empty result: (0, dim).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(items)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    keys = np.fromiter(lengths if lengths is not None else (len(x) for x in items), np.int64, count=n)
    order = np.argsort(keys, kind="stable")  # stable: equal lengths keep input order, results deterministic
    parts = [_as_matrix(embed_batch([items[i] for i in order[s:s + batch_size]]), min(batch_size, n - s))
             for s in range(0, n, batch_size)]
    sorted_rows = np.concatenate(parts)
    out = np.empty_like(sorted_rows)
    out[order] = sorted_rows
    return out


def _as_matrix(rows: np.ndarray, expected: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] != expected:
        raise ValueError(f"embed_batch returned shape {rows.shape} for {expected} inputs")
    return rows


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


async def aembed(embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """Async edge: run a (blocking, GIL-releasing) ``embed`` in a worker thread."""
    return await asyncio.to_thread(embed, texts)
