"""Run a BEIR test set through the engine, one ablation at a time, and score it.

    report = evaluate(engine, "data/scifact", ["default", "bm25", "dense", "hybrid"])

Each ablation is a branch set (plus rerank for ``+rerank``); ``default`` is exactly what a user gets with
no options (the configured branches, and rerank if a reranker is configured). Every query goes through
``Retriever.aquery``, the path a user's query takes. Queries run one after another, so each latency is
that query's own (no other query competes for the cores); one untimed warm-up query per ablation keeps
model loading out of the percentiles.

Chunk rankings become document rankings: a document ranks at its first (best) chunk and scores that
chunk's score. The engine returns its candidates (``retrieval.candidates`` chunks, reranked when a
reranker runs); Recall@100 needs a deeper list, so the retriever's own fusion (``Retriever.fuse``) over
the same branch lists extends them. Document ids are mapped back to the BEIR ``_id`` through the
metadata store. ``ignore_identical_ids`` drops the query's own id from its ranking (BEIR's rule for
ArguAna, whose queries are corpus documents themselves).

Where the dataset has ``answers.jsonl``, the default row also scores the answers (see ``answers.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..ingest.freshness import is_current
from ..retrieve.results import QueryResult, doc_of
from ..types import BRANCH_NAMES
from .answers import AnswerScore, GoldAnswer, load_answers, mean_scores, score_answer
from .beir import BeirDataset, corpus_ids, load_beir
from .metrics import DEFAULT_METRICS, evaluate_rankings
from .stats import latency_summary

ALL_BRANCHES = BRANCH_NAMES
DEFAULT = "default"
# name -> (branches, rerank). ``default`` is what a user gets with no options: the configured branches
# (``()``), and rerank when a reranker is configured (``None``: as configured). The others add one stage
# to the one before, so the table reads as an ablation.
ABLATIONS: dict[str, tuple[tuple[str, ...], bool | None]] = {
    DEFAULT: ((), None),
    "bm25": (("bm25",), False),
    "dense": (("dense",), False),
    "hybrid": (("dense", "bm25"), False),
    "+subqueries": (("dense", "bm25", "subqueries"), False),
    "+graph": (ALL_BRANCHES, False),
    "+rerank": (ALL_BRANCHES, True),
}
Ablation = tuple[tuple[str, ...], bool | None]

Ranked = list[tuple[str, float]]  # (document id, score), best first
# hit@5: the evidence (a page of a filing) is in the top 5; all@10: every gold passage is in the top 10
EVAL_METRICS = (*DEFAULT_METRICS, "hit@5", "all@10")
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
    answers: dict[str, float] = field(default_factory=dict)  # mean answer scores (sets with answers.jsonl)
    answer_scores: dict[str, AnswerScore] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "branches": list(self.branches), "rerank": self.rerank,
               "metrics": {m: round(v, 6) for m, v in self.metrics.items()},
               "latency": {m: round(v, 3) for m, v in self.latency.items()},
               "branch_status": self.branch_status}
        if self.answers:
            out["answers"] = {m: round(v, 6) for m, v in self.answers.items()}
        return out


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
    ignore_identical_ids: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "n_queries": self.n_queries, "k": self.k,
                "ignore_identical_ids": self.ignore_identical_ids,
                "ablations": [a.to_dict() for a in self.ablations], "skipped": self.skipped,
                "ingest": self.ingest, "settings": self.settings}

    def get(self, name: str) -> AblationResult:
        for a in self.ablations:
            if a.name == name:
                return a
        raise KeyError(name)


def resolve_ablations(names: Sequence[str] | None, branches: Sequence[str] | None = None) -> dict[str, Ablation]:
    """Named ablations (all of them by default), or one custom branch set named after its branches."""
    if branches:
        bad = [b for b in branches if b not in ALL_BRANCHES]
        if bad:
            raise ConfigError("branches", f"unknown branch {bad[0]!r}; known: {', '.join(ALL_BRANCHES)}")
        chosen = tuple(dict.fromkeys(branches))
        return {"+".join(chosen): (chosen, False)}
    out: dict[str, Ablation] = {}
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


def full_chunk_ranking(result: QueryResult, fused: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """The engine's candidates first, in its final order, then the rest of the same fusion. After a
    rerank every chunk gets 1/rank: a reranker's scores share no scale with fusion scores, the order is
    what counts."""
    head = [(h.chunk_id, h.score) for h in (result.candidates or result.retrieval.hits)]
    seen = {c for c, _ in head}
    chunks = head + [(c, s) for c, s in fused if c not in seen]
    if result.rerank.ok:
        return [(c, 1.0 / i) for i, (c, _) in enumerate(chunks, start=1)]
    return chunks


def to_external(ranked: Ranked, external: Mapping[str, str], k: int, drop: str = "") -> Ranked:
    """Map doc ids to BEIR ids; documents from outside the dataset keep their own id (never relevant).
    ``drop`` (a BEIR id) is left out: the query's own document when identical ids are ignored."""
    mapped = ((external.get(d, d), s) for d, s in ranked)
    return [(d, s) for d, s in mapped if d != drop or not drop][:k]


Namer = Callable[[Sequence[str]], list[list[str]]]  # chunk ids -> for each, the corpus ids it shows


def doc_namer(external: Mapping[str, str]) -> Namer:
    """A corpus.jsonl set: a chunk is judged as its document's BEIR ``_id``."""
    return lambda chunk_ids: [[external.get(doc_of(c), doc_of(c))] for c in chunk_ids]


class PageNamer:
    """A file corpus: a chunk is judged as its file, relative to the corpus directory, with ``#page=N`` for
    each page it spans, in order (``10k.pdf#page=41``, ``10k.pdf#page=42``): a reader handed the chunk
    sees both pages' text. Looked up in the metadata store once per chunk."""

    def __init__(self, meta: Any, root: Path) -> None:
        self.meta = meta
        self.root = root.resolve()
        self._names: dict[str, list[str]] = {}
        self._files: dict[str, str] = {}

    def __call__(self, chunk_ids: Sequence[str]) -> list[list[str]]:
        todo = [c for c in dict.fromkeys(chunk_ids) if c not in self._names]
        if todo:
            for cid, ch in self.meta.get_chunks(todo).items():
                file = self._file(ch.doc_id)
                pages = range(ch.page_start, max(ch.page_start, ch.page_end) + 1) if ch.page_start else ()
                self._names[cid] = [f"{file}#page={n}" for n in pages] or [file]
        return [self._names.get(c, [doc_of(c)]) for c in chunk_ids]

    def _file(self, doc_id: str) -> str:
        if doc_id not in self._files:
            rec = self.meta.get_document(doc_id)
            path = _path(rec.source or rec.uri) if rec is not None else None
            rel = path.resolve().relative_to(self.root) if path and path.resolve().is_relative_to(self.root) else None
            self._files[doc_id] = str(rel) if rel is not None else doc_id
        return self._files[doc_id]


def _path(uri: str) -> Path | None:
    if not uri.startswith("file://"):
        return None
    return Path(unquote(urlsplit(uri).path, errors="surrogateescape"))


@dataclass(frozen=True, slots=True)
class _Run:
    branches: tuple[str, ...]
    rerank: bool | None
    k: int
    generate: bool


async def _one_query(retriever: Any, text: str, run: _Run, namer: Namer) -> tuple[Ranked, float, QueryResult]:
    # the latency is the engine's work only (retrieve, rerank and, on the answer row, generate), not the
    # deeper re-fusion below
    t0 = time.perf_counter()
    res: QueryResult = await retriever.aquery(text, branches=run.branches or None, rerank=run.rerank,
                                              generate=run.generate)
    ms = (time.perf_counter() - t0) * 1000.0
    chunks = full_chunk_ranking(res, retriever.fuse(res.retrieval.lists))
    names = namer([c for c, _ in chunks])
    return rank_documents((n, s) for shown, (_, s) in zip(names, chunks, strict=True) for n in shown), ms, res


def _score_answer(gold: GoldAnswer, res: QueryResult, namer: Namer) -> AnswerScore:
    by_id = {h.chunk_id: h for h in res.hits}
    cited = [by_id[c.chunk_id] for c in res.citations if c.chunk_id in by_id]
    return score_answer(gold, res.answer, [h.text for h in cited],
                        [n for shown in namer([h.chunk_id for h in cited]) for n in shown])


async def run_ablation(retriever: Any, dataset: BeirDataset, name: str, branches: tuple[str, ...],
                       rerank: bool | None, external: Mapping[str, str] | Namer, k: int,
                       on_query: OnQuery | None = None, *, ignore_identical_ids: bool = False,
                       answers: Mapping[str, GoldAnswer] | None = None) -> AblationResult:
    """One ablation over every query. ``external`` names what the set judges: a doc id -> BEIR ``_id``
    mapping, or a ``Namer`` of chunk ids (a file corpus: ``PageNamer``)."""
    namer = doc_namer(external) if isinstance(external, Mapping) else external
    run = _Run(branches, rerank, k, generate=bool(answers))
    queries = list(dataset.queries.items())
    if queries:  # warm-up, untimed: first calls load sessions and fill OS caches
        await _one_query(retriever, queries[0][1], run, namer)
    rankings: dict[str, Ranked] = {}
    latencies: list[float] = []
    status: dict[str, Counter[str]] = {}
    scored_answers: dict[str, AnswerScore] = {}
    reranked = False
    for i, (qid, text) in enumerate(queries, start=1):
        ranked, ms, res = await _one_query(retriever, text, run, namer)
        rankings[qid] = to_external(ranked, {}, k, drop=qid if ignore_identical_ids else "")
        latencies.append(ms)
        reranked = reranked or res.rerank.ok
        for b, t in res.retrieval.branches.items():
            status.setdefault(b, Counter())[t.status] += 1
        if answers and qid in answers:
            scored_answers[qid] = _score_answer(answers[qid], res, namer)
        if on_query:
            on_query(name, i, len(queries))
    qrels = {q: dataset.qrels[q] for q in dataset.queries}
    scored = evaluate_rankings(qrels, {q: [d for d, _ in ranked] for q, ranked in rankings.items()},
                               EVAL_METRICS)
    used = branches or tuple(str(b) for b in retriever.settings.retrieval.branches)
    return AblationResult(name=name, branches=used, rerank=reranked, metrics=scored.mean,
                          latency=latency_summary(latencies), per_query=scored.per_query, rankings=rankings,
                          branch_status={b: dict(c) for b, c in status.items()},
                          answers=mean_scores(scored_answers), answer_scores=scored_answers)


def external_map(meta: Any, ids: Sequence[str]) -> dict[str, str]:
    """doc_id -> BEIR _id for the corpus ids the index holds."""
    return {doc: ext for ext, doc in meta.doc_ids_by_external(list(ids)).items()}


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
    files = sorted(p for p in corpus.rglob("*") if p.is_file()) if corpus.is_dir() else [corpus]
    if files and all(is_current(engine.stores.meta, f) for f in files):
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
                    ingest: bool = True, on_query: OnQuery | None = None, ignore_identical_ids: bool = False,
                    answers: bool = True) -> EvalReport:
    dataset = limit_dataset(load_beir(dataset_dir, split), limit)
    chosen = resolve_ablations(ablations, branches)
    gold = load_answers(dataset.root) if answers else {}
    info: dict[str, Any] = {}
    if ingest:  # idempotent: an unchanged corpus is skipped by size/mtime in milliseconds
        summary = await engine.aingest([dataset.corpus])
        info = {"ok": summary.ok, "unchanged": summary.unchanged, "failed": len(summary.failed),
                "chunks": summary.chunks, "wall_s": round(summary.wall_s, 3)}
    external: Mapping[str, str] | Namer = (
        PageNamer(engine.stores.meta, dataset.corpus) if dataset.files
        else external_map(engine.stores.meta, corpus_ids(dataset.corpus)))
    retriever = engine.retriever
    report = EvalReport(dataset=str(dataset.root), split=split, n_queries=len(dataset.queries), k=k, ablations=[],
                        ingest=info, settings=_settings_info(engine.settings),
                        ignore_identical_ids=ignore_identical_ids)
    for name, (bs, rerank) in chosen.items():
        if rerank and retriever.reranker is None:
            report.skipped[name] = "rerank.backend = none"
            continue
        report.ablations.append(await run_ablation(
            retriever, dataset, name, bs, rerank, external, k, on_query, ignore_identical_ids=ignore_identical_ids,
            answers=gold if name == DEFAULT else None))
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
