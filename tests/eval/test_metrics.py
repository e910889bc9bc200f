"""fanrag's metrics against two independent implementations: pytrec_eval (trec_eval itself) and ranx."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from fanrag.eval.beir import read_qrels_tsv, read_trec_run
from fanrag.eval.metrics import evaluate_rankings, evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k, trec_order

DATA = Path(__file__).parent / "data"
TOL = 1e-6


def _random_case(seed: int, n_queries: int = 60, n_docs: int = 400) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"D{i}" for i in range(n_docs)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        # graded levels, including judged-non-relevant 0s, to exercise linear gain and the ideal ordering
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if not any(qrels[qid].values()):
            qrels[qid][judged[0]] = 1
        retrieved = rng.sample(docs, rng.randint(5, 150))
        # half the relevant docs get pulled into the run so metrics are not all ~0
        retrieved += [d for d in judged if rng.random() < 0.5 and d not in retrieved]
        # distinct scores: ranx and trec_eval break ties differently, so ties are tested separately
        scores = rng.sample(range(1, 10_000_000), len(retrieved))
        run[qid] = {d: s / 1e4 for d, s in zip(retrieved, scores, strict=True)}
    return qrels, run


def _cut(run: dict, k: int) -> dict:
    return {q: {d: s[d] for d in trec_order(s)[:k]} for q, s in run.items()}


def _pytrec(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(_cut(run, 10))
    return {q: {"ndcg@10": v["ndcg_cut_10"], "recall@100": v["recall_100"], "mrr@10": rr[q]["recip_rank"]}
            for q, v in full.items()}


def _ranx(qrels: dict, run: dict) -> dict[str, float]:
    ranx = pytest.importorskip("ranx")
    return ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["ndcg@10", "recall@100", "mrr@10"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_run_matches_pytrec_eval_per_query(seed: int) -> None:
    qrels, run = _random_case(seed)
    ours = evaluate_run(qrels, run)
    theirs = _pytrec(qrels, run)
    assert set(theirs) == set(ours.per_query)
    for qid, values in theirs.items():
        for metric, value in values.items():
            assert ours.per_query[qid][metric] == pytest.approx(value, abs=TOL), (qid, metric)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_run_matches_ranx_means(seed: int) -> None:
    qrels, run = _random_case(seed)
    ours = evaluate_run(qrels, run).mean
    for metric, value in _ranx(qrels, run).items():
        assert ours[metric] == pytest.approx(value, abs=TOL), metric


def test_tied_scores_are_ordered_like_trec_eval() -> None:
    qrels = {"q": {"a": 1, "c": 2}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5}}
    assert trec_order(run["q"]) == ["c", "b", "a", "d"]
    assert evaluate_run(qrels, run).per_query["q"]["ndcg@10"] == pytest.approx(
        _pytrec(qrels, run)["q"]["ndcg@10"], abs=TOL)


def test_real_run_file_matches_both() -> None:
    """A fanrag hybrid run on SciFact (first 60 test queries, top 100), as written by ``fanrag eval --out``."""
    qrels_all = read_qrels_tsv(DATA / "scifact-test-qrels.tsv")
    run = read_trec_run(DATA / "scifact-hybrid.run")
    qrels = {q: qrels_all[q] for q in run}
    ours = evaluate_run(qrels, run)
    theirs = _pytrec(qrels, run)
    for qid, values in theirs.items():
        for metric, value in values.items():
            assert ours.per_query[qid][metric] == pytest.approx(value, abs=TOL), (qid, metric)
    for metric, value in _ranx(qrels, run).items():
        assert ours.mean[metric] == pytest.approx(value, abs=TOL), metric
    assert ours.n == len(run) == 60


def test_hand_computed_values() -> None:
    rels = {"a": 2, "b": 1, "x": 0}
    ranking = ["x", "a", "c", "b"]
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranking, rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranking, rels, 1) == 0.0
    assert recall_at_k(ranking, rels, 2) == 0.5
    assert recall_at_k(ranking, rels, 4) == 1.0
    assert mrr_at_k(ranking, rels, 10) == 0.5
    assert mrr_at_k(ranking, rels, 1) == 0.0


def test_unjudged_queries_are_skipped_and_missing_rankings_score_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}
    report = evaluate_rankings(qrels, {"q1": ["a"]})
    assert set(report.per_query) == {"q1", "q3"}
    assert report.per_query["q3"]["ndcg@10"] == 0.0
    assert report.mean["ndcg@10"] == pytest.approx(0.5)


def test_unknown_metric_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_rankings({"q": {"a": 1}}, {"q": ["a"]}, ["map@10"])
