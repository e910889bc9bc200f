"""Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

    score(d) = Σ_lists  w_branch / (k + rank_list(d)),   rank 1-based

Rank-based fusion needs no score calibration between branches (cosine similarity, BM25 and graph
counts live on different scales), which is why it is the merge point of the fan-out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf(
    lists: Sequence[tuple[str, Sequence[str]]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    top: int | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked lists of ids; each list is ``(branch name, ids best first)``.

    A branch may contribute several lists (one per sub-question); each counts on its own with the
    branch's weight (default 1.0; 0 leaves the list out). An id repeated inside one list counts once, at its best rank. Ties
    are broken by first appearance, so the result is deterministic. Returns ``(id, score)`` best first.
    """
    if k < 0:
        raise ValueError("rrf k must be >= 0")
    weights = weights or {}
    scores: dict[str, float] = {}
    for branch, ids in lists:
        w = float(weights.get(branch, 1.0))
        if w == 0.0:  # weight 0 switches the branch off: its ids must not appear with score 0
            continue
        seen: set[str] = set()
        for rank, cid in enumerate(ids, start=1):
            if cid in seen:
                continue
            seen.add(cid)
            # dict insertion order records first appearance, which is the tie-break below
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
    order = {cid: i for i, cid in enumerate(scores)}
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
    return fused if top is None else fused[:top]
