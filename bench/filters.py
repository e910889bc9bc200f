"""Filtered retrieval on SciFact: recall of the filtered search against an exact filtered scan, and its
latency against the unfiltered query, at three selectivities.

Every SciFact document gets a ``bucket`` in its metadata, uniform in 0..999 (a hash of its id, so the same
in every run); ``bucket < 500``, ``bucket < 50`` and ``bucket < 1`` keep 50 %, 5 % and 0.1 % of the
documents. For each test claim, in the same run and alternating which goes first:

    unfiltered   Retriever.aretrieve(text): the whole retrieval path (transform, fan-out, fusion, fetch)
    filtered     the same with ``filter=`` each selectivity (the filter's SQL included)

Reported per selectivity: the documents the filter matches; p50/p95 latency of both (ms) and their
ratio; the filter's own SQL time; recall@10 of the dense search (``VectorStore.search(q, 10, allowed)``,
what the dense branch runs) against an exact scan of the allowed documents' stored vectors done here in
numpy (target >= 0.95), and of BM25 against the unfiltered BM25 ranking cut to the allowed documents;
and how many fused hits fell outside the filter (must be 0).

    python bench/filters.py --home /tmp/scifact-filters --build          # ingest once, then measure
    python bench/filters.py --home H --limit 500 --queries 20 --out /tmp  # a quick correctness run

The index is built with the default settings (embedded stores). Numbers taken on a busy machine (see
environment.loadavg) are not worth comparing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, percentile, print_table, ratio, write_result
from retrieval import load_queries  # the judged test claims

from fanrag.engine import Engine
from fanrag.filters import as_filter
from fanrag.retrieve import Retriever
from fanrag.settings import Settings
from fanrag.stores.vectors_hnsw import ShardedHnswStore

DATA = Path("/work/shared/data/scifact")
SELECTIVITIES = {"50%": "bucket < 500", "5%": "bucket < 50", "0.1%": "bucket < 1"}
TARGET_RECALL = 0.95
K = 10


def bucket(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=4).digest(), "big") % 1000


def bucketed_corpus(data: Path, out: Path, limit: int | None) -> Path:
    """SciFact's corpus with ``metadata.bucket`` on every record (the first ``limit`` records)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (data / "corpus.jsonl").open() as src, out.open("w") as dst:
        for n, line in enumerate(src):
            if limit is not None and n >= limit:
                break
            rec = json.loads(line)
            rec["metadata"] = {**(rec.get("metadata") or {}), "bucket": bucket(str(rec["_id"]))}
            dst.write(json.dumps(rec) + "\n")
    return out


def build(home: Path, data: Path, limit: int | None) -> None:
    corpus = bucketed_corpus(data, home.parent / f"{home.name}-corpus" / "corpus.jsonl", limit)
    with Engine.open(home) as engine:
        summary = engine.ingest([corpus])
    print(f"ingested {summary.ok} documents ({summary.chunks} chunks) into {home}")


class ExactScan:
    """Every stored vector of the HNSW index, with its chunk and document: the exact filtered top-k."""

    def __init__(self, store: ShardedHnswStore) -> None:
        live = store._db.query("SELECT label, chunk_id, doc_id FROM live")
        labels = np.array([r[0] for r in live], dtype=np.uint64)
        self.chunks = [r[1] for r in live]
        self.docs = np.array([r[2] for r in live])
        self.doc_of = {r[1]: r[2] for r in live}
        shard_of = labels % np.uint64(store.n_shards)
        self.vectors = np.zeros((len(labels), store.dim), dtype=np.float32)
        for i in range(store.n_shards):
            rows = np.flatnonzero(shard_of == i)
            if len(rows):
                self.vectors[rows] = store._shards[i].get_items(labels[rows], return_type="numpy")

    def top(self, query: np.ndarray, allowed: frozenset[str], k: int) -> list[str]:
        rows = np.flatnonzero(np.isin(self.docs, list(allowed)))
        scores = self.vectors[rows] @ (query / np.linalg.norm(query))
        return [self.chunks[rows[i]] for i in np.argsort(-scores, kind="stable")[:k]]


def _recall(got: Sequence[str], truth: Sequence[str]) -> float:
    return len(set(got) & set(truth)) / len(truth) if truth else 1.0


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}


async def measure(retriever: Retriever, queries: Sequence[str], warmup: int) -> dict[str, Any]:
    stores = retriever.stores
    if not isinstance(stores.vectors, ShardedHnswStore):
        raise SystemExit("bench/filters.py measures the embedded HNSW store (the default settings)")
    exact = ExactScan(stores.vectors)
    filters = {name: as_filter(text) for name, text in SELECTIVITIES.items()}
    allowed = {name: frozenset(stores.meta.filter_documents(f)) for name, f in filters.items()}
    for text in queries[:warmup]:
        await retriever.aretrieve(text)
        for f in filters.values():
            await retriever.aretrieve(text, filter=f)
    plain: list[float] = []
    out: dict[str, dict[str, list[float]]] = {n: {"ms": [], "filter_ms": [], "dense": [], "bm25": [], "outside": []}
                                              for n in filters}
    for i, text in enumerate(queries):
        order = list(filters) if i % 2 else list(reversed(filters))
        if i % 2 == 0:
            plain.append((await retriever.aretrieve(text)).total_ms)
        for name in order:
            r = await retriever.aretrieve(text, filter=filters[name])
            m = out[name]
            m["ms"].append(r.total_ms)
            m["filter_ms"].append(next((s.end_ms - s.start_ms for s in r.spans if s.name == "filter"), 0.0))
            m["outside"].append(sum(h.doc_id not in allowed[name] for h in r.hits))
        if i % 2 == 1:
            plain.append((await retriever.aretrieve(text)).total_ms)
        q = retriever.embedder.embed_query(text)
        everything = stores.keywords.search(text, len(exact.chunks))  # the whole BM25 ranking
        for name, ids in allowed.items():
            got = [h.chunk_id for h in stores.vectors.search(q, K, ids)]
            out[name]["dense"].append(_recall(got, exact.top(q, ids, K)))
            truth = [h.chunk_id for h in everything if exact.doc_of[h.chunk_id] in ids][:K]
            out[name]["bm25"].append(_recall([h.chunk_id for h in stores.keywords.search(text, K, ids)], truth))
    unfiltered = _stats(plain)
    return {
        "queries": len(queries),
        "unfiltered": unfiltered,
        "selectivities": {name: {
            "filter": SELECTIVITIES[name], "documents_matched": len(allowed[name]),
            "filtered": _stats(m["ms"]), "filter_sql_p50_ms": percentile(m["filter_ms"], 50),
            "p50_over_unfiltered": ratio(percentile(m["ms"], 50), unfiltered["p50_ms"]),
            "dense_recall_at_10": float(np.mean(m["dense"])), "bm25_recall_at_10": float(np.mean(m["bm25"])),
            "hits_outside_the_filter": int(sum(m["outside"])),
        } for name, m in out.items()},
    }


def run(home: Path, queries: Sequence[str], warmup: int) -> dict[str, Any]:
    settings = Settings.load(home=home)
    with Engine.open(settings=settings, mode="read") as engine:
        stats = asyncio.run(measure(engine.retriever, queries, warmup))
        docs, chunks = engine.status().documents.committed, engine.stores.vectors.count()
    stats["meets_target"] = all(s["dense_recall_at_10"] >= TARGET_RECALL and s["hits_outside_the_filter"] == 0
                                for s in stats["selectivities"].values())
    return {"index": {"home": str(home), "documents": docs, "chunks": chunks,
                      "vector_shards": settings.hnsw.shards, "ef_search": settings.hnsw.ef_search,
                      "branches": list(settings.retrieval.branches)}, "target_recall": TARGET_RECALL, **stats}


def report(result: dict[str, Any]) -> None:
    rows = [{"selectivity": "none", "docs": result["index"]["documents"], **result["unfiltered"]}]
    rows += [{"selectivity": n, "docs": s["documents_matched"], **s["filtered"], "x_unfiltered": s["p50_over_unfiltered"],
              "sql_ms": s["filter_sql_p50_ms"], "dense_r@10": s["dense_recall_at_10"], "bm25_r@10": s["bm25_recall_at_10"],
              "outside": s["hits_outside_the_filter"]} for n, s in result["selectivities"].items()]
    print_table(f"filtered retrieval, {result['queries']} queries", rows, list(rows[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="index home (built by --build)")
    ap.add_argument("--data", type=Path, default=DATA, help="BEIR SciFact directory")
    ap.add_argument("--build", action="store_true", help="ingest the bucketed corpus into --home first")
    ap.add_argument("--limit", type=int, default=None, help="--build: the first N documents only (a quick check)")
    ap.add_argument("--queries", type=int, default=None, help="the first N test claims (default: all 300)")
    ap.add_argument("--warmup", type=int, default=10, help="queries run before measuring")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where filters.json goes")
    args = ap.parse_args(argv)
    env = environment()
    if args.build:
        build(args.home, args.data, args.limit)
    result = run(args.home, [text for _, text in load_queries(args.data)][: args.queries], args.warmup)
    report(result)
    print(f"wrote {write_result('filters', result, env_before=env, results_dir=args.out)}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
