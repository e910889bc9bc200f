"""The evaluation runner: BEIR loading, chunk -> document rankings, ablations over a scripted retriever,
run files that trec_eval scores the same, and one small end-to-end run on real SciFact documents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag.errors import ConfigError
from fanrag.eval.beir import DatasetError, load_beir, read_trec_run, write_trec_run
from fanrag.eval.metrics import DEFAULT_METRICS, evaluate_run
from fanrag.eval.runner import (
    ABLATIONS,
    EvalReport,
    full_chunk_ranking,
    rank_documents,
    resolve_ablations,
    run_ablation,
    to_external,
    write_runs,
)
from fanrag.ids import chunk_id
from fanrag.retrieve.fusion import rrf
from fanrag.retrieve.results import BranchTiming, QueryResult, RankedList, RerankInfo, RetrievalResult
from fanrag.retrieve.transform import TransformResult
from fanrag.settings import Settings
from fanrag.stores.base import ScoredId
from fanrag.types import Hit


def cid(doc: str, pos: int = 0) -> str:
    return chunk_id(doc, pos, f"{doc}:{pos}")


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return root


def test_load_beir_keeps_judged_queries_only(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "ds", [{"_id": "1", "text": "a"}],
                      [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "unjudged"}, {"_id": "q3", "text": "t"}],
                      [("q1", "1", 1), ("q3", "1", 2)])
    ds = load_beir(root)
    assert ds.queries == {"q1": "first", "q3": "t"}
    assert ds.qrels == {"q1": {"1": 1}, "q3": {"1": 2}}
    assert ds.corpus == root / "corpus.jsonl"


def test_load_beir_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="corpus.jsonl"):
        load_beir(tmp_path)
    root = write_beir(tmp_path / "ds", [{"_id": "1", "text": "a"}], [{"_id": "q1", "text": "x"}], [("q1", "1", 1)])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\n")
    with pytest.raises(DatasetError, match="line 2"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\t1\t1\n")
    with pytest.raises(DatasetError, match="no text"):
        load_beir(root)


def test_documents_rank_at_their_first_chunk_with_their_best_score() -> None:
    assert rank_documents([("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.6)]) == [("a", 0.9), ("b", 0.8), ("c", 0.6)]
    assert rank_documents([("a", 0.1), ("b", 0.5), ("a", 0.9)]) == [("a", 0.9), ("b", 0.5)]
    assert to_external([("d1", 1.0), ("dX", 0.5), ("d2", 0.2)], {"d1": "E1", "d2": "E2"}, 2) == \
        [("E1", 1.0), ("dX", 0.5)]


def _result(lists: list[RankedList], hits: list[Hit], branches: tuple[str, ...]) -> RetrievalResult:
    return RetrievalResult(query="q", transform=TransformResult("q"), hits=hits, lists=lists,
                           branches={b: BranchTiming(0.0, 1.0, "ok") for b in branches})


def test_full_ranking_is_the_engines_hits_then_the_same_fusion() -> None:
    dense = RankedList("dense", "dense", "q", [ScoredId(cid("d1"), 0.9), ScoredId(cid("d2"), 0.8),
                                               ScoredId(cid("d3"), 0.7)])
    bm25 = RankedList("bm25", "bm25", "q", [ScoredId(cid("d2"), 9.0), ScoredId(cid("d4"), 8.0)])
    hits = [Hit(cid("d2"), 1 / 61 + 1 / 62, "d2")]  # candidates = 1: the engine returned the top chunk only
    r = _result([dense, bm25], hits, ("dense", "bm25"))
    res = QueryResult("q", hits, r, RerankInfo("none", "skipped"), candidates=hits)
    chunks = full_chunk_ranking(res, ScriptedRetriever({}).fuse(r.lists))
    assert [c for c, _ in chunks] == [cid("d2"), cid("d1"), cid("d4"), cid("d3")]
    scores = [s for _, s in chunks]
    assert scores == sorted(scores, reverse=True)


def test_resolve_ablations() -> None:
    assert list(resolve_ablations(None)) == list(ABLATIONS)
    assert resolve_ablations(["hybrid"]) == {"hybrid": (("dense", "bm25"), False)}
    assert resolve_ablations(None, ["bm25", "dense", "bm25"]) == {"bm25+dense": (("bm25", "dense"), False)}
    with pytest.raises(ConfigError):
        resolve_ablations(["nope"])
    with pytest.raises(ConfigError):
        resolve_ablations(None, ["sparse"])


class ScriptedRetriever:
    """Returns fixed branch lists per query text; records the calls it got."""

    def __init__(self, lists: dict[str, dict[str, list[str]]]) -> None:
        self.lists = lists
        self.settings = Settings()
        self.reranker = None
        self.calls: list[tuple[str, tuple[str, ...], int]] = []

    async def aretrieve(self, text: str, branches: Any = None, k: Any = None) -> RetrievalResult:
        branches = tuple(branches or self.settings.retrieval.branches)  # None: as configured, like the engine
        self.calls.append((text, tuple(branches), k))
        lists = [RankedList(b, b, text, [ScoredId(c, 1.0 / (i + 1)) for i, c in enumerate(ids[:k])])
                 for b, ids in self.lists[text].items() if b in branches]
        return _result(lists, [], tuple(branches))

    def fuse(self, lists: list[RankedList]) -> list[tuple[str, float]]:
        cfg = self.settings.retrieval
        return rrf([(rl.kind, [h.chunk_id for h in rl.hits]) for rl in lists], k=cfg.rrf_k, weights=cfg.weights)

    async def aquery(self, text: str, branches: Any = None, rerank: Any = None, generate: bool = False) -> QueryResult:
        """The engine's path: retrieve at the configured depth, then rerank the candidates if asked."""
        r = await self.aretrieve(text, branches, self.settings.retrieval.branch_k)
        hits, info = r.hits, RerankInfo("none", "skipped")
        if rerank and self.reranker is not None:
            scores, _ = self.reranker.score_ids(text, [h.chunk_id for h in hits], [h.text for h in hits])
            hits = [hits[i] for i in sorted(range(len(hits)), key=lambda i: -scores[i])]
            info = RerankInfo("scripted", "ok")
        return QueryResult(text, hits[:5], r, info, candidates=hits)


def test_run_ablation_scores_documents_against_qrels_and_times_every_query(tmp_path: Path) -> None:
    retriever = ScriptedRetriever({
        "alpha": {"dense": [cid("da"), cid("dz")], "bm25": [cid("dz"), cid("da", 1)]},
        "beta": {"dense": [cid("dy")], "bm25": [cid("db"), cid("dy")]},
    })
    ds = SimpleNamespace(queries={"q1": "alpha", "q2": "beta"}, qrels={"q1": {"A": 1}, "q2": {"B": 1}})
    external = {"da": "A", "db": "B", "dy": "Y", "dz": "Z"}
    res = asyncio.run(run_ablation(retriever, ds, "hybrid", ("dense", "bm25"), False, external, 100))
    # fusion is per chunk, as in the engine: dz's one chunk is in both lists and beats da's two chunks,
    # each in one list; a document then ranks at its best chunk
    assert [d for d, _ in res.rankings["q1"]] == ["Z", "A"]
    assert [d for d, _ in res.rankings["q2"]] == ["Y", "B"]
    assert res.per_query["q1"]["mrr@10"] == 0.5 and res.per_query["q2"]["mrr@10"] == 0.5
    assert res.metrics["recall@100"] == 1.0
    assert res.latency["n"] == 2 and res.latency["p50_ms"] >= 0
    assert res.branch_status == {"dense": {"ok": 2}, "bm25": {"ok": 2}}
    assert retriever.calls[0] == ("alpha", ("dense", "bm25"), 100)  # the untimed warm-up
    assert len(retriever.calls) == 3

    report = EvalReport("ds", "test", 2, 100, [res])
    run_file = write_runs(report, tmp_path / "hybrid.trec")[0]
    assert run_file == tmp_path / "hybrid.trec"
    assert evaluate_run(ds.qrels, read_trec_run(run_file)).mean == pytest.approx(
        {m: res.metrics[m] for m in DEFAULT_METRICS})
    report.ablations.append(res)
    assert [p.name for p in write_runs(report, tmp_path / "r.trec")] == ["r.hybrid.trec", "r.hybrid.trec"]


def test_trec_run_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.run"
    write_trec_run(path, {"q1": [("a", 0.5), ("b", 0.25)], "q2": [("c", 1 / 3)]}, "tag")
    assert path.read_text().splitlines()[0] == "q1 Q0 a 1 0.5 tag"
    assert read_trec_run(path) == {"q1": {"a": 0.5, "b": 0.25}, "q2": {"c": 1 / 3}}  # exact: no rounding


def test_end_to_end_on_scifact_documents(tmp_path: Path, scifact: Path) -> None:
    """Ingest 12 real abstracts, evaluate two ablations through the engine, and check that the run file
    scores the same under pytrec_eval (trec_eval) as the report says."""
    from fanrag.engine import Engine
    from fanrag.eval.runner import evaluate

    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels_lines = (scifact / "qrels" / "test.tsv").read_text().splitlines()[1:]
    judged = [line.split("\t") for line in qrels_lines][:12]
    want = {d for _, d, _ in judged}
    corpus = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()
              if json.loads(line)["_id"] in want]
    queries = [json.loads(line) for line in (scifact / "queries.jsonl").read_text().splitlines()]
    root = write_beir(tmp_path / "ds", corpus, [q for q in queries if q["_id"] in {j[0] for j in judged}],
                      [(q, d, int(s)) for q, d, s in judged])
    settings = Settings.load(home=tmp_path / "home", overrides={"pipeline": {"workers": 1}}, env={})
    with Engine.open(settings=settings) as engine:
        report = evaluate(engine, root, ["bm25", "hybrid", "+rerank"], k=10)
        again = evaluate(engine, root, ["bm25"], k=10)
    assert report.skipped == {"+rerank": "rerank.backend = none"}
    assert report.ingest["ok"] == len(corpus) and again.ingest["unchanged"] == len(corpus)
    hybrid = report.get("hybrid")
    assert hybrid.metrics["recall@100"] > 0.5  # a 12-document corpus: most judged documents are found
    run_file = write_runs(EvalReport("ds", "test", report.n_queries, 10, [hybrid]), tmp_path / "h.trec")[0]
    run = read_trec_run(run_file)
    assert all(d in want for scores in run.values() for d in scores)  # BEIR ids, not fanrag doc ids
    qrels = {q: {d: s} for q, d, s in ((q, d, int(s)) for q, d, s in judged)}
    for q, d, s in judged:
        qrels.setdefault(q, {})[d] = int(s)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    ours = {q: v["ndcg@10"] for q, v in hybrid.per_query.items()}
    assert {q: v["ndcg_cut_10"] for q, v in trec.items()} == pytest.approx(ours, abs=1e-6)


class ReverseReranker:
    """Scores the candidates in reverse of the fused order, like a cross-encoder that disagrees."""

    def score_ids(self, query: str, ids: list[str], texts: list[str]) -> tuple[list[float], int]:
        return [float(i) for i in range(len(ids))], 0


class CandidateRetriever(ScriptedRetriever):
    """Also returns the fused top chunks as hits, as the engine does (here: the first two of bm25)."""

    async def aretrieve(self, text: str, branches: Any = None, k: Any = None) -> RetrievalResult:
        r = await super().aretrieve(text, branches, k)
        top = [Hit(c, 1.0, c.rsplit("-", 2)[0], text="t") for c in self.lists[text]["bm25"][:2]]
        return _result(r.lists, top, tuple(branches))


def test_rerank_reorders_the_candidates_and_keeps_the_rest_after_them() -> None:
    retriever = CandidateRetriever({"alpha": {"bm25": [cid("da"), cid("db"), cid("dc")]}})
    retriever.reranker = ReverseReranker()
    ds = SimpleNamespace(queries={"q1": "alpha"}, qrels={"q1": {"B": 1}})
    res = asyncio.run(run_ablation(retriever, ds, "+rerank", ("bm25",), True, {"da": "A", "db": "B", "dc": "C"}, 10))
    assert res.rankings["q1"] == [("B", 1.0), ("A", 0.5), ("C", 1 / 3)]
    assert res.metrics["mrr@10"] == 1.0


def test_identical_ids_are_dropped_from_their_own_ranking() -> None:
    # ArguAna: a query is itself a corpus document and would otherwise rank first
    retriever = ScriptedRetriever({"alpha": {"dense": [cid("dq"), cid("da")]}})
    ds = SimpleNamespace(queries={"Q": "alpha"}, qrels={"Q": {"A": 1}})
    external = {"dq": "Q", "da": "A"}
    kept = asyncio.run(run_ablation(retriever, ds, "dense", ("dense",), False, external, 10))
    dropped = asyncio.run(run_ablation(retriever, ds, "dense", ("dense",), False, external, 10,
                                       ignore_identical_ids=True))
    assert [d for d, _ in kept.rankings["Q"]] == ["Q", "A"] and kept.metrics["mrr@10"] == 0.5
    assert [d for d, _ in dropped.rankings["Q"]] == ["A"] and dropped.metrics["mrr@10"] == 1.0


def test_the_default_row_uses_the_configured_branches() -> None:
    retriever = ScriptedRetriever({"alpha": {"dense": [cid("da")], "bm25": [cid("db")], "graph": [cid("dc")]}})
    ds = SimpleNamespace(queries={"q1": "alpha"}, qrels={"q1": {"A": 1}})
    res = asyncio.run(run_ablation(retriever, ds, "default", (), None, {"da": "A"}, 10))
    assert retriever.calls[-1][1] == tuple(retriever.settings.retrieval.branches)
    assert res.branches == tuple(retriever.settings.retrieval.branches) and not res.rerank


def test_hit_and_all_metrics_by_hand() -> None:
    from fanrag.eval.metrics import evaluate_rankings

    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    got = evaluate_rankings(qrels, {"q1": ["x", "a", "y", "b"], "q2": ["x", "y"]}, ["hit@1", "hit@2", "all@4", "all@3"])
    assert got.per_query["q1"] == {"hit@1": 0.0, "hit@2": 1.0, "all@4": 1.0, "all@3": 0.0}
    assert got.per_query["q2"] == {"hit@1": 0.0, "hit@2": 0.0, "all@4": 0.0, "all@3": 0.0}


def test_a_file_corpus_is_judged_by_file_and_page(tmp_path: Path) -> None:
    """A set whose corpus is a directory of documents: ingested as files, ranked by page."""
    import shutil

    from fanrag.engine import Engine
    from fanrag.eval.runner import evaluate, open_engine

    root = tmp_path / "ds"
    (root / "pdfs").mkdir(parents=True)
    (root / "qrels").mkdir()
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "three-pages.pdf", root / "pdfs" / "guide.pdf")
    (root / "pdfs" / "notes.md").write_text("# Notes\n\nTea contains caffeine and antioxidants.\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "How are long PDFs split into page ranges?"})
                                        + "\n" + json.dumps({"_id": "q2", "text": "What does tea contain?"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tguide.pdf#page=3\t1\nq2\tnotes.md\t1\n")
    assert load_beir(root).files
    settings = Settings.load(home=tmp_path / "home", overrides={"pipeline": {"workers": 1}}, env={})
    with Engine.open(settings=settings) as engine:
        report = evaluate(engine, root, ["default"], k=10)
    default = report.get("default")
    # the whole 3-page PDF fits one chunk: it shows each of its pages, in order
    assert [d for d, _ in default.rankings["q1"]][:3] == ["guide.pdf#page=1", "guide.pdf#page=2", "guide.pdf#page=3"]
    assert [d for d, _ in default.rankings["q2"]][0] == "notes.md"
    assert default.metrics["hit@5"] == 1.0 and default.metrics["mrr@10"] == pytest.approx((1 / 3 + 1) / 2)
    engine, needs_ingest = open_engine(tmp_path / "home", root)  # every file current: read-only
    engine.close()
    assert not needs_ingest
