"""Run a BEIR test set through the retriever, one ablation at a time, and score it.

    report = evaluate(engine, "data/scifact", ["bm25", "dense", "hybrid"])

Each ablation is a branch set (plus rerank for ``+rerank``). Queries run one after another, so each
latency is that query's own (no other query competes for the cores); one untimed warm-up query per
ablation keeps model loading out of the percentiles.

Chunk rankings become document rankings: a document ranks at its first (best) chunk and scores that
chunk's score. ``aretrieve`` returns the fused, committed top ``retrieval.candidates`` chunks; Recall@100
needs a deeper list, so the same fusion (``rrf`` with the same k and weights over the same branch lists)
is extended past them. The document ids are mapped back to the BEIR ``_id`` through the metadata store.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..retrieve.fusion import rrf
from ..retrieve.results import RetrievalResult, doc_of
from .beir import BeirDataset, corpus_ids, load_beir
from .metrics import DEFAULT_METRICS, evaluate_rankings
from .stats import latency_summary

ALL_BRANCHES = ("dense", "bm25", "subqueries", "graph")
# name -> (branches, rerank): each adds one stage to the one before, so the table reads as an ablation.
ABLATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "bm25": (("bm25",), False),
    "dense": (("dense",), False),
    "hybrid": (("dense", "bm25"), False),
    "+subqueries": (("dense", "bm25", "subqueries"), False),
    "+graph": (ALL_BRANCHES, False),
    "+rerank": (ALL_BRANCHES, True),
}

Ranked = list[tuple[str, float]]  # (document id, score), best first
OnQuery = Callable[[str, int, int], None]  # (ablation, done, total)


@dataclass
class AblationResult:
    name: str
    branches: tuple[str, ...]
    rerank: bool
    metrics: dict[str, float]
    latency: dict[str, float]  # p50_ms, p95_ms, p99_ms, mean_ms, n
    per_query: dict[str, dict[str, float]] = field(repr=False)
    rankings: dict[str, Ranked] = field(repr=False)  # BEIR qid -> (BEIR doc _id, score), best first
    branch_status: dict[str, dict[str, int]] = field(default_factory=dict)  # branch -> status -> queries

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "branches": list(self.branches), "rerank": self.rerank,
                "metrics": {m: round(v, 6) for m, v in self.metrics.items()},
                "latency": {m: round(v, 3) for m, v in self.latency.items()},
                "branch_status": self.branch_status}


@dataclass
class EvalReport:
    dataset: str
    split: str
    n_queries: int
    k: int
    ablations: list[AblationResult]
    skipped: dict[str, str] = field(default_factory=dict)  # ablation -> why it did not run
    ingest: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "n_queries": self.n_queries, "k": self.k,
                "ablations": [a.to_dict() for a in self.ablations], "skipped": self.skipped,
                "ingest": self.ingest, "settings": self.settings}

    def get(self, name: str) -> AblationResult:
        for a in self.ablations:
            if a.name == name:
                return a
        raise KeyError(name)


def resolve_ablations(names: Sequence[str] | None, branches: Sequence[str] | None = None
                      ) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Named ablations (all of them by default), or one custom branch set named after its branches."""
    if branches:
        bad = [b for b in branches if b not in ALL_BRANCHES]
        if bad:
            raise ConfigError("branches", f"unknown branch {bad[0]!r}; known: {', '.join(ALL_BRANCHES)}")
        chosen = tuple(dict.fromkeys(branches))
        return {"+".join(chosen): (chosen, False)}
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for name in names or ABLATIONS:
        if name not in ABLATIONS:
            raise ConfigError("ablations", f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        out[name] = ABLATIONS[name]
    return out


def rank_documents(chunks: Iterable[tuple[str, float]]) -> Ranked:
    """(doc id, score) per ranked chunk -> each document once, at its first occurrence, scored by its
    best chunk (the first, when the chunks come sorted)."""
    best: dict[str, float] = {}
    for doc, score in chunks:
        if doc not in best or score > best[doc]:
            best[doc] = score
    return list(best.items())


def full_chunk_ranking(r: RetrievalResult, rrf_k: int, weights: Mapping[str, float]) -> list[tuple[str, float]]:
    """The committed hits first (exactly what the engine returned), then the rest of the same fusion."""
    head = [(h.chunk_id, h.score) for h in r.hits]
    seen = {c for c, _ in head}
    fused = rrf([(rl.kind, [h.chunk_id for h in rl.hits]) for rl in r.lists], k=rrf_k, weights=weights)
    return head + [(c, s) for c, s in fused if c not in seen]


def to_external(ranked: Ranked, external: Mapping[str, str], k: int) -> Ranked:
    """Map doc ids to BEIR ids; documents from outside the dataset keep their own id (never relevant)."""
    return [(external.get(d, d), s) for d, s in ranked[:k]]


async def _rerank(retriever: Any, r: RetrievalResult) -> list[str]:
    """Chunk ids of the fused candidates in cross-encoder order."""
    hits = r.hits
    scores, _ = await asyncio.to_thread(retriever.reranker.score_ids, r.query, [h.chunk_id for h in hits],
                                        [h.text for h in hits])
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [hits[i].chunk_id for i in order]


async def _one_query(retriever: Any, text: str, branches: tuple[str, ...], rerank: bool, k: int,
                     rrf_k: int, weights: Mapping[str, float]) -> tuple[Ranked, float, RetrievalResult]:
    # the latency is the engine's work only (retrieve, then rerank), not the deeper re-fusion below
    t0 = time.perf_counter()
    r = await retriever.aretrieve(text, branches=branches, k=k)
    top = await _rerank(retriever, r) if rerank and retriever.reranker is not None and r.hits else None
    ms = (time.perf_counter() - t0) * 1000.0
    chunks = full_chunk_ranking(r, rrf_k, weights)
    if top is not None:
        reranked = set(top)
        rest = [c for c, _ in chunks if c not in reranked]
        # cross-encoder and RRF scores share no scale: the run file gets 1/rank, which keeps the order
        chunks = [(c, 1.0 / i) for i, c in enumerate(top + rest, start=1)]
    return rank_documents((doc_of(c), s) for c, s in chunks), ms, r


async def run_ablation(retriever: Any, dataset: BeirDataset, name: str, branches: tuple[str, ...], rerank: bool,
                       external: Mapping[str, str], k: int, on_query: OnQuery | None = None) -> AblationResult:
    cfg = retriever.settings.retrieval
    queries = list(dataset.queries.items())
    if queries:  # warm-up, untimed: first calls load sessions and fill OS caches
        await _one_query(retriever, queries[0][1], branches, rerank, k, cfg.rrf_k, cfg.weights)
    rankings: dict[str, Ranked] = {}
    latencies: list[float] = []
    status: dict[str, Counter[str]] = {}
    for i, (qid, text) in enumerate(queries, start=1):
        ranked, ms, r = await _one_query(retriever, text, branches, rerank, k, cfg.rrf_k, cfg.weights)
        rankings[qid] = to_external(ranked, external, k)
        latencies.append(ms)
        for b, t in r.branches.items():
            status.setdefault(b, Counter())[t.status] += 1
        if on_query:
            on_query(name, i, len(queries))
    qrels = {q: dataset.qrels[q] for q in dataset.queries}
    scored = evaluate_rankings(qrels, {q: [d for d, _ in ranked] for q, ranked in rankings.items()},
                               DEFAULT_METRICS)
    return AblationResult(name=name, branches=branches, rerank=rerank, metrics=scored.mean,
                          latency=latency_summary(latencies), per_query=scored.per_query, rankings=rankings,
                          branch_status={b: dict(c) for b, c in status.items()})


def external_map(meta: Any, ids: Sequence[str]) -> dict[str, str]:
    """doc_id -> BEIR _id for the corpus ids the index holds."""
    return {doc: ext for ext, doc in meta.doc_ids_by_external(list(ids)).items()}


def corpus_is_current(meta: Any, corpus: Path) -> bool:
    """The index committed this corpus file and the file has not changed since (size and mtime, the
    pipeline's own skip test): evaluation can then run on a read-only index."""
    from ..ids import source_uri

    rec = meta.get_source(source_uri(corpus))
    st = corpus.stat()
    return bool(rec and rec.status == "committed" and rec.size == st.st_size and rec.mtime == st.st_mtime)


def open_engine(home: str | Path | None, dataset_dir: str | Path, split: str = "test") -> tuple[Any, bool]:
    """An Engine for evaluating ``dataset_dir``: read-only (no writer lock, so evaluations can run side by
    side) when the index already holds the corpus as it is, else writable so it can be ingested.
    Returns (engine, needs_ingest)."""
    from ..engine import Engine
    from ..errors import StoreError

    corpus = load_beir(dataset_dir, split).corpus
    try:
        engine = Engine.open(home, mode="read")
    except StoreError:  # nothing indexed there yet
        return Engine.open(home), True
    if corpus_is_current(engine.stores.meta, corpus):
        return engine, False
    engine.close()
    return Engine.open(home), True


def limit_dataset(dataset: BeirDataset, limit: int | None) -> BeirDataset:
    if not limit:
        return dataset
    keep = dict(list(dataset.queries.items())[:limit])
    return BeirDataset(dataset.root, dataset.split, keep, {q: dataset.qrels[q] for q in keep})


async def aevaluate(engine: Any, dataset_dir: str | Path, ablations: Sequence[str] | None = None, k: int = 100, *,
                    branches: Sequence[str] | None = None, limit: int | None = None, split: str = "test",
                    ingest: bool = True, on_query: OnQuery | None = None) -> EvalReport:
    dataset = limit_dataset(load_beir(dataset_dir, split), limit)
    chosen = resolve_ablations(ablations, branches)
    info: dict[str, Any] = {}
    if ingest:  # idempotent: an unchanged corpus is skipped by size/mtime in milliseconds
        summary = await engine.aingest([dataset.corpus])
        info = {"ok": summary.ok, "unchanged": summary.unchanged, "failed": len(summary.failed),
                "chunks": summary.chunks, "wall_s": round(summary.wall_s, 3)}
    external = external_map(engine.stores.meta, corpus_ids(dataset.corpus))
    retriever = engine.retriever
    report = EvalReport(dataset=str(dataset.root), split=split, n_queries=len(dataset.queries), k=k, ablations=[],
                        ingest=info, settings=_settings_info(engine.settings))
    for name, (bs, rerank) in chosen.items():
        if rerank and engine.settings.rerank.backend == "none":
            report.skipped[name] = "rerank.backend = none"
            continue
        report.ablations.append(await run_ablation(retriever, dataset, name, bs, rerank, external, k, on_query))
    return report


def evaluate(engine: Any, dataset_dir: str | Path, ablations: Sequence[str] | None = None, k: int = 100,
             **kw: Any) -> EvalReport:
    """Synchronous ``aevaluate`` (not from inside a running event loop)."""
    return asyncio.run(aevaluate(engine, dataset_dir, ablations, k, **kw))


def _settings_info(settings: Any) -> dict[str, Any]:
    r = settings.retrieval
    return {"rrf_k": r.rrf_k, "weights": dict(r.weights), "branch_k": r.branch_k, "transform": r.transform,
            "embedder": f"{settings.embed.backend}/{settings.embed.model}", "chunk_size": settings.chunk.size,
            "rerank": settings.rerank.backend}


def write_runs(report: EvalReport, out: str | Path) -> list[Path]:
    """One TREC run file per ablation: ``out`` itself for a single ablation, else ``<stem>.<name><suffix>``."""
    from .beir import write_trec_run

    out = Path(out)
    paths: list[Path] = []
    for a in report.ablations:
        tag = "fanrag-" + a.name.lstrip("+")
        path = out if len(report.ablations) == 1 else out.with_name(f"{out.stem}.{a.name.lstrip('+')}{out.suffix}")
        write_trec_run(path, a.rankings, tag)
        paths.append(path)
    return paths
