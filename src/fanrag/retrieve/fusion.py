"""The merge point of the fan-out: every branch's ranked lists become one chunk ranking.

Two fusions, chosen by ``retrieval.fusion``:

- ``rrf``, Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009)::

      score(u) = Σ_lists  w_list / (k + rank_list(u)),   rank 1-based

  It needs no score calibration between branches (cosine similarity, BM25 and graph counts live on
  different scales).
- ``score``, normalised score fusion (CombSUM over z-scores, as Pyserini's hybrid does with min-max):
  each list's scores are standardised over the list (mean 0, standard deviation 1), and a unit absent
  from a list scores one standard deviation below that list's weakest kept item (it ranked below
  everything the list kept).
  Unlike RRF it keeps how far ahead a branch's best hits are: a branch that is sure of its top answer
  says so, one whose scores are flat does not.

Both are *unit-aware* (``units.py``): a list's credit goes to a retrieval unit (a short document, or a
window of a long one), once per list, at the unit's best chunk in that list, so a document that dense
retrieval finds through one chunk and BM25 through another gets credit from both, as it deserves. Chunks
are then ranked within their unit by the same fusion at chunk level, and the output is every unit's best
chunk in unit order, followed by the units' other chunks: the first ``top_n`` chunks of the context come
from ``top_n`` different places, and a ranking of documents by first occurrence is exactly the unit order.
"""

from __future__ import annotations

import math
from operator import itemgetter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .units import unit_of

Scored = list[tuple[str, float]]  # (id, score) best first
FusedList = tuple[str, Sequence[tuple[str, float]]]  # (list kind, (chunk id, branch score) best first)


def rrf(
    lists: Sequence[tuple[str, Sequence[str]]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    top: int | None = None,
) -> Scored:
    """Fuse ranked lists of ids; each list is ``(branch name, ids best first)``.

    A branch may contribute several lists (one per sub-question); each counts on its own with the
    branch's weight (default 1.0; 0 leaves the list out). An id repeated inside one list counts once, at
    its best rank. Ties are broken by first appearance, so the result is deterministic. Returns
    ``(id, score)`` best first.
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
    return _ranked(scores, top)


# How far below a list's weakest kept id an absent id scores, in standard deviations: not retrieved is
# worse than retrieved last. It also gives a one-item list (a lone exact entity match from the graph,
# which cannot be standardised) its due. On the dev sets 0, 0.5 and 1 were within 0.003 nDCG@10.
ABSENT = 1.0


def zscore_fusion(
    lists: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    weights: Mapping[str, float] | None = None,
    top: int | None = None,
    absent: float | None = None,
) -> Scored:
    """CombSUM of standardised scores: Σ_lists w_list · z_list(id), with an id absent from a list taking
    the list's minimum z. Lists hold ``(id, score)`` best first; a repeated id counts at its best score."""
    weights = weights or {}
    scores: dict[str, float] = {}
    base = 0.0  # Σ w·floor: what every id gets from the lists that do not hold it
    for branch, scored in lists:
        w = float(weights.get(branch, 1.0))
        best = _best_scores(scored)
        if w == 0.0 or not best:
            continue
        z = _standardise(best)
        floor = min(z.values()) - (ABSENT if absent is None else absent)
        base += w * floor
        for i, zi in z.items():  # dict insertion order records first appearance: the tie-break
            scores[i] = scores.get(i, 0.0) + w * (zi - floor)
    return _ranked({i: s + base for i, s in scores.items()}, top)


def _best_scores(scored: Sequence[tuple[str, float]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for i, s in scored:
        if i not in best or s > best[i]:
            best[i] = float(s)
    return best


def _standardise(scores: Mapping[str, float]) -> dict[str, float]:
    values = scores.values()
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in values) / n)
    if sd <= 1e-12 * max(1.0, abs(mean)):  # a flat list (or one item) says nothing about order: all at 0
        return dict.fromkeys(scores, 0.0)
    return {i: (s - mean) / sd for i, s in scores.items()}


def _ranked(scores: Mapping[str, float], top: int | None) -> Scored:
    # sorted() is stable, reverse=True included: equal scores keep the dict's order of first appearance
    fused = sorted(scores.items(), key=itemgetter(1), reverse=True)
    return fused if top is None else fused[:top]


@dataclass(frozen=True, slots=True)
class Fusion:
    """The retriever's fusion: ``method`` (rrf | score), RRF's ``k``, list weights by kind, and the unit
    window (chunks of one document that count as one place; see ``units.py``)."""

    method: str = "score"
    k: int = 60
    weights: Mapping[str, float] | None = None
    window: int = 4

    def fuse(self, lists: Sequence[FusedList]) -> Scored:
        """Every chunk of every list, best first: units in fused order, each unit's best chunk first."""
        if not lists:
            return []
        unit = {cid: unit_of(cid, self.window) for _, hits in lists for cid, _ in hits}
        units = self._combine([(kind, _unit_scores(hits, unit)) for kind, hits in lists])
        chunks = dict(self._combine(lists))
        by_unit: dict[str, list[str]] = {}
        for cid in chunks:  # chunks arrive best first, so each unit's list is in its own fused order
            by_unit.setdefault(unit[cid], []).append(cid)
        unit_score = dict(units)
        head = [(by_unit[u][0], s) for u, s in units if u in by_unit]
        tail = [(c, unit_score[u]) for u, _ in units for c in by_unit.get(u, [])[1:]]
        return head + tail

    def _combine(self, lists: Sequence[FusedList]) -> Scored:
        if self.method == "rrf":
            return rrf([(kind, [i for i, _ in hits]) for kind, hits in lists], k=self.k, weights=self.weights)
        return zscore_fusion(lists, weights=self.weights)


def _unit_scores(hits: Sequence[tuple[str, float]], unit: Mapping[str, str]) -> list[tuple[str, float]]:
    """A list of chunks as a list of units, each at its best (first) chunk's score, in list order."""
    seen: dict[str, float] = {}
    for cid, score in hits:
        seen.setdefault(unit[cid], score)
    return list(seen.items())


FUSIONS: dict[str, Callable[..., Scored]] = {"rrf": rrf, "score": zscore_fusion}
