"""Ranking metrics with trec_eval's definitions (what BEIR reports through pytrec_eval).

    nDCG@k   = DCG@k / IDCG@k,  DCG@k = Σ_{i=1..k} gain_i / log2(i + 1),  gain = the qrels relevance
               level itself (trec_eval's ``ndcg_cut``: linear gain, not 2^rel - 1); IDCG@k sorts the
               query's qrels by relevance, so judged-relevant documents the run never found still count.
    Recall@k = |relevant ∩ top k| / |relevant|         (trec_eval ``recall_k``; relevant = level >= 1)
    MRR@k    = 1 / rank of the first relevant document in the top k, 0 if none (ranx ``mrr@k``; trec_eval
               ``recip_rank`` on a run cut to k)
    hit@k    = 1 if any relevant document is in the top k (success@k)
    all@k    = 1 if every relevant document is in the top k (multi-hop: all gold passages retrieved)

Two entry points: ``evaluate_rankings`` takes ranked lists as they are (the order fanrag returns), and
``evaluate_run`` takes ``{qid: {docid: score}}`` and orders it like trec_eval does (score descending,
ties broken by docid descending), so its numbers equal trec_eval's on the same run file.
Queries without any relevant judgement are skipped, as trec_eval and BEIR do. Pure Python: the lists
are at most a few hundred long, where numpy would only add conversion cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Qrels = Mapping[str, Mapping[str, int]]  # qid -> docid -> relevance level
Run = Mapping[str, Mapping[str, float]]  # qid -> docid -> score
DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def dcg(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` gains: Σ gain_i / log2(i + 1), i 1-based."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]) if g)


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list against one query's judgements (negative levels count as 0)."""
    ideal = dcg(sorted((max(r, 0) for r in rels.values()), reverse=True), k)
    if ideal <= 0:
        return 0.0
    return dcg([max(rels.get(d, 0), 0) for d in ranking], k) / ideal


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranking[:k], start=1):
        if rels.get(d, 0) >= 1:
            return 1.0 / i
    return 0.0


def hit_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """1 if any relevant document is in the top k (success@k): "the evidence page is in the top 5"."""
    return float(any(rels.get(d, 0) >= 1 for d in ranking[:k]))


def all_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """1 if every relevant document is in the top k: what a multi-hop question needs to be answerable."""
    relevant = {d for d, r in rels.items() if r >= 1}
    return float(bool(relevant) and relevant <= set(ranking[:k]))


_METRICS: dict[str, Callable[[Sequence[str], Mapping[str, int], int], float]] = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "hit": hit_at_k,
    "all": all_at_k,
}


def parse_metric(name: str) -> tuple[Callable[[Sequence[str], Mapping[str, int], int], float], int]:
    """``"ndcg@10"`` -> (ndcg_at_k, 10)."""
    base, _, cut = name.lower().partition("@")
    if base not in _METRICS or not cut.isdigit() or int(cut) < 1:
        raise ValueError(f"unknown metric {name!r}; use one of {sorted(_METRICS)} with @k, e.g. ndcg@10")
    return _METRICS[base], int(cut)


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval's order: score descending, then docid descending (its tie-break)."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


@dataclass
class MetricReport:
    """Per-query values and their means; ``n`` is the number of evaluated queries."""

    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # qid -> metric -> value
    mean: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.per_query)


def evaluate_rankings(qrels: Qrels, rankings: Mapping[str, Sequence[str]],
                      metrics: Sequence[str] = DEFAULT_METRICS) -> MetricReport:
    """Every judged query (at least one relevant document) is evaluated; a query missing from
    ``rankings`` scores 0, as an empty run would."""
    parsed = [(m, *parse_metric(m)) for m in metrics]
    report = MetricReport()
    for qid, rels in qrels.items():
        if not any(r >= 1 for r in rels.values()):
            continue
        ranking = list(rankings.get(qid, ()))
        report.per_query[qid] = {m: fn(ranking, rels, k) for m, fn, k in parsed}
    n = max(report.n, 1)
    report.mean = {m: sum(v[m] for v in report.per_query.values()) / n for m in metrics}
    return report


def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS) -> MetricReport:
    """``evaluate_rankings`` on a scored run, ordered as trec_eval orders it."""
    return evaluate_rankings(qrels, {qid: trec_order(scores) for qid, scores in run.items()}, metrics)
