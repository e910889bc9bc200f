"""Stores: embedded vs server backends, write buffering, concurrent vs sequential multi-store writes,
and BM25 in tantivy vs PostgreSQL. Servers are started here on loopback (bench/_servers.py).

Parts (all in one invocation, one after the other, written to bench/results/stores.json):

    ingest       Engine.ingest of the first N SciFact documents into embedded stores, into server stores
                 (PostgreSQL meta, pgvector, PostgreSQL keywords, S3 blobs, FalkorDB graph) and into the
                 server stores with the Redis vector buffer: wall time, documents/s, write-stage time.
                 Embedding dominates all three; the write-stage time is where stores differ.
    writes       the embedded run's own write batches (the chunks, vectors, titles and documents the
                 pipeline wrote) replayed through the pipeline's write step (IngestPipeline._write_once:
                 the four store writes with asyncio.gather, then the metadata commit) into fresh
                 embedded and server stores, and the same calls one after another. Ratios: concurrent
                 wall / slowest write (≈ 1 is the design) and concurrent / sequential.
    buffering    W writer threads, each its own connection pool, write the same vectors in small
                 batches (as many workers would) straight into pgvector, vs through the Redis buffer
                 (one flusher at a time, large batches). Wall time until every vector is in pgvector,
                 and how many write transactions pgvector received.
    bm25         all of SciFact indexed by tantivy and by PostgreSQL (BM25 over a ts_rank candidate
                 pool, BM25 over every match, ts_rank alone): index time, query p50/p99, nDCG@10.

    python bench/stores.py --quick      # 300 documents
    python bench/stores.py              # 1,000 documents (bm25 always uses all of SciFact)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, percentile, print_table, ratio, write_result
from _servers import Servers, ServerUnavailable

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
STORE_ORDER = ("vectors", "keywords", "graph", "blobs")


def subset(corpus: Path, n: int, out: Path) -> Path:
    """The first ``n`` lines of a BEIR corpus.jsonl."""
    with corpus.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
    return out


def server_stores(srv: Servers, *, buffer: bool) -> dict[str, str]:
    db = srv.postgres_db()
    urls = {"meta": db, "vectors": "pgvector" + db.removeprefix("postgresql"), "keywords": db,
            "blobs": srv.s3_bucket(), "graph": srv.falkordb_graph()}
    if buffer:
        urls["vector_buffer"] = f"{srv.redis_url}?key=vbuf-{time.monotonic_ns()}&flush_batch=4096&flush_age=2"
    return urls


def settings_for(home: Path, stores: dict[str, str]) -> Any:
    from fanrag.settings import Settings

    return Settings.load(home=home, overrides={"stores": stores}, env={})


# ---------------------------------------------------------------------------------------------- ingest

def run_ingest(corpus: Path, home: Path, stores: dict[str, str], record: list[tuple[Any, ...]] | None) -> dict[str, Any]:
    from fanrag.engine import Engine
    from fanrag.ingest.writer import IndexWriter

    real = IndexWriter._write_once

    async def recording(self: Any, batch: Any) -> None:
        if record is not None:
            record.append((list(batch),))
        await real(self, batch)
    IndexWriter._write_once = recording  # type: ignore[method-assign]
    try:
        with Engine.open(settings=settings_for(home, stores)) as engine:
            engine.embedder.embed(["warm up"])  # model loading is outside the timed region
            t0 = time.perf_counter()
            summary = engine.ingest([corpus])
            wall = time.perf_counter() - t0
            info = engine.status()
    finally:
        IndexWriter._write_once = real  # type: ignore[method-assign]
    assert info.vectors == info.chunks, info  # every chunk in every store (the buffer flushed at the end)
    return {"wall_s": wall, "docs": summary.ok, "chunks": summary.chunks, "failed": len(summary.failed),
            "docs_per_s": summary.ok / wall, "embed_s": summary.stages.embed, "write_s": summary.stages.write,
            "write_stores_s": summary.stages.write_stores}


# ---------------------------------------------------------------------------------------------- writes

def replay_writes(batches: list[tuple[Any, ...]], home: Path, stores: dict[str, str], embedder: Any,
                  concurrent: bool) -> dict[str, Any]:
    """The recorded batches through the pipeline's own write step (concurrent) or the same calls in turn."""
    import numpy as np

    from fanrag.ingest.writer import IndexWriter, _replace
    from fanrag.stores import open_stores

    with open_stores(settings_for(home, stores), dim=embedder.dim, model=embedder.name) as s:
        pipe = IndexWriter(s)

        async def sequential(batch: Any) -> None:
            # the same calls as IndexWriter._write_once, one after another
            docs = [r.doc for r in batch]
            chunks = [c for r in batch for c in r.chunks]
            vectors = np.concatenate([r.vectors for r in batch if len(r.vectors)]) if chunks else None
            ids = [d.doc_id for d in docs]
            files = {r.doc.source: (r.piece.plan.source.path, r.piece.plan.content_hash) for r in batch}
            st = pipe.stages.write_stores
            s.meta.mark_pending(docs)
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("vectors", lambda: _replace(s.vectors, ids, chunks, vectors)),
                ("keywords", lambda: _replace(s.keywords, ids, chunks, {d.doc_id: d.title for d in docs})),
                ("graph", lambda: _replace(s.graph, ids, chunks)),
                ("blobs", lambda: pipe._put_blobs(files))]
            results = {}
            for name, fn in steps:
                t = time.perf_counter()
                results[name] = fn()
                st[name] = st.get(name, 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            s.meta.commit(docs, chunks, {d.doc_id: results["blobs"][d.source] for d in docs})
            st["meta"] = st.get("meta", 0.0) + time.perf_counter() - t

        write = pipe._write_once if concurrent else sequential
        per_batch_slowest = 0.0
        t0 = time.perf_counter()
        for args in batches:
            before = dict(pipe.stages.write_stores)
            asyncio.run(write(*args))
            after = pipe.stages.write_stores
            per_batch_slowest += max(after[k] - before.get(k, 0.0) for k in STORE_ORDER) + \
                after["meta"] - before.get("meta", 0.0)
        s.flush()
        wall = time.perf_counter() - t0
        per_store = dict(pipe.stages.write_stores)
    return {"wall_s": wall, "per_store_s": per_store, "sum_s": sum(per_store.values()),
            "slowest_path_s": per_batch_slowest, "batches": len(batches)}


# ---------------------------------------------------------------------------------------------- buffering

def buffering(batches: list[tuple[Any, ...]], srv: Servers, writers: int, small: int, buffered: bool) -> dict[str, Any]:
    """``writers`` threads write every recorded vector in batches of ``small``, each with its own pool."""
    import numpy as np

    from fanrag.stores.buffer import BufferConfig, BufferedVectorStore
    from fanrag.stores.vectors_pgvector import PgVectorStore

    pieces = []
    for _docs, _ids, chunks, vectors, *_ in batches:
        for i in range(0, len(chunks), small):
            pieces.append((chunks[i:i + small], np.asarray(vectors[i:i + small])))
    dsn = "pgvector" + srv.postgres_db().removeprefix("postgresql")
    dim = pieces[0][1].shape[1]
    PgVectorStore(dsn, dim).close()  # create the schema once, outside the timed region
    key = f"vbuf-bench-{time.monotonic_ns()}"
    counts = {"inner_adds": 0}
    lock = threading.Lock()

    def open_store() -> Any:
        inner = PgVectorStore(dsn, dim)
        real_add = inner.add

        def add(chunks: Any, vectors: Any) -> None:
            with lock:
                counts["inner_adds"] += 1
            real_add(chunks, vectors)
        inner.add = add  # type: ignore[method-assign]
        if not buffered:
            return inner
        return BufferedVectorStore(inner, BufferConfig.from_url(f"{srv.redis_url}?key={key}&flush_batch=4096"))

    stores = [open_store() for _ in range(writers)]
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for chunks, vectors in pieces[w::writers]:
                stores[w].add(chunks, vectors)
        except BaseException as exc:  # noqa: BLE001 - reported after join
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appended = time.perf_counter() - t0
    for st in stores:
        st.flush()  # buffered: apply what is left (a no-op for pgvector itself)
    wall = time.perf_counter() - t0
    total = stores[0].count()
    for st in stores:
        st.close()
    if errors:
        raise errors[0]
    n = sum(len(c) for c, _ in pieces)
    assert total == n, (total, n)
    return {"vectors": n, "writer_batches": len(pieces), "writers": writers, "wall_s": wall,
            "writers_done_s": appended, "vectors_per_s": n / wall, "pgvector_write_transactions": counts["inner_adds"]}


# ---------------------------------------------------------------------------------------------- bm25

def bm25(srv: Servers, scifact: Path) -> dict[str, Any]:
    from fanrag.eval.beir import load_beir
    from fanrag.eval.metrics import evaluate_run
    from fanrag.stores.keywords_tantivy import TantivyKeywordStore
    from fanrag.stores.keywords_postgres import PgKeywordStore
    from fanrag.types import Chunk

    data = load_beir(scifact)
    docs = [json.loads(line) for line in data.corpus.open(encoding="utf-8")]
    chunks = [Chunk.make(d["_id"], 0, d["text"], char_start=0, char_end=len(d["text"])) for d in docs]
    titles = {d["_id"]: d["title"] for d in docs}
    doc_of = {c.chunk_id: c.doc_id for c in chunks}
    tmp = Path(tempfile.mkdtemp(prefix="fanrag-bench-bm25-"))
    db = srv.postgres_db()
    variants: dict[str, Callable[[], Any]] = {
        "tantivy": lambda: TantivyKeywordStore(tmp / "bm25"),
        "postgres_bm25_pool300": lambda: PgKeywordStore(db + "?candidates=300"),
        "postgres_bm25_all_matches": lambda: PgKeywordStore(db + "?candidates=0"),
    }
    out: dict[str, Any] = {}
    for name, make in variants.items():
        store = make()
        t0 = time.perf_counter()
        if name in ("tantivy", "postgres_bm25_pool300"):  # the PG variants share one table
            for i in range(0, len(chunks), 512):
                store.add(chunks[i:i + 512], titles)
        index_s = time.perf_counter() - t0
        lat, run = [], {}
        for qid, text in data.queries.items():
            t = time.perf_counter()
            hits = store.search(text, 100)
            lat.append(time.perf_counter() - t)
            run[qid] = {doc_of[h.chunk_id]: h.score for h in hits}
        store.close()
        report = evaluate_run(data.qrels, run, ["ndcg@10", "recall@100"])
        out[name] = {"index_s": index_s if index_s > 0.01 else None, "p50_ms": 1000 * percentile(lat, 50),
                     "p99_ms": 1000 * percentile(lat, 99), **report.mean}
    return out


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scifact", type=Path, default=SCIFACT)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="300 documents")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--small-batch", type=int, default=32, help="vectors per write in the buffering part")
    ap.add_argument("--parts", default="ingest,writes,buffering,bm25")
    ap.add_argument("--repeat", type=int, default=5, help="replays of the write batches per variant (median kept)")
    ap.add_argument("--name", default="stores", help="result file name (bench/results/NAME.json)")
    args = ap.parse_args(argv)
    n_docs = 300 if args.quick else args.docs
    parts = set(args.parts.split(","))
    env0 = environment()
    tmp = Path(tempfile.mkdtemp(prefix="fanrag-bench-stores-"))
    corpus = subset(args.scifact / "corpus.jsonl", n_docs, tmp / "corpus.jsonl")
    result: dict[str, Any] = {"docs": n_docs, "errors": {}}
    with Servers() as srv:
        batches: list[tuple[Any, ...]] = []
        ingest: dict[str, Any] = {}
        plans = {"embedded": dict, "server": lambda: server_stores(srv, buffer=False),
                 "server+buffer": lambda: server_stores(srv, buffer=True)}
        for name, stores in plans.items():
            if name != "embedded" and "ingest" not in parts:
                continue
            try:
                ingest[name] = run_ingest(corpus, tmp / f"home-{name}", stores(), batches if name == "embedded" else None)
            except ServerUnavailable as exc:
                result["errors"][f"ingest/{name}"] = str(exc)
        result["ingest"] = ingest
        print_table("ingest", [{"stores": k, **v} for k, v in ingest.items()],
                    ["stores", "docs", "chunks", "wall_s", "docs_per_s", "embed_s", "write_s"])
        if "writes" in parts:
            from fanrag.embed import create_embedder
            from fanrag.settings import Settings

            embedder = create_embedder(Settings().embed)
            writes = {}
            for name, stores in (("embedded", dict), ("server", lambda: server_stores(srv, buffer=False))):
                for mode in ("concurrent", "sequential"):
                    try:  # each repeat into fresh stores; the run with the median wall time is kept
                        runs = sorted((replay_writes(batches, tmp / f"w-{name}-{mode}-{r}", stores(), embedder,
                                                     mode == "concurrent") for r in range(args.repeat)),
                                      key=lambda run: run["wall_s"])
                        writes[f"{name}/{mode}"] = {**runs[len(runs) // 2], "repeats": len(runs)}
                    except ServerUnavailable as exc:
                        result["errors"][f"writes/{name}/{mode}"] = str(exc)
                c, s = writes.get(f"{name}/concurrent"), writes.get(f"{name}/sequential")
                if c and s:
                    writes[f"{name}/ratios"] = {"concurrent_over_slowest_path": ratio(c["wall_s"], c["slowest_path_s"]),
                                                "concurrent_over_sequential": ratio(c["wall_s"], s["wall_s"])}
            embedder.close()
            result["writes"] = writes
            print_table("writes (replayed batches)", [{"variant": k, **v} for k, v in writes.items() if "/ratios" not in k],
                        ["variant", "batches", "wall_s", "sum_s", "slowest_path_s"])
            print(json.dumps({k: v for k, v in writes.items() if k.endswith("/ratios")}, indent=1))
        if "buffering" in parts:
            try:
                direct = buffering(batches, srv, args.writers, args.small_batch, buffered=False)
                buffered = buffering(batches, srv, args.writers, args.small_batch, buffered=True)
                result["buffering"] = {"direct": direct, "buffered": buffered,
                                       "buffered_over_direct_wall": ratio(buffered["wall_s"], direct["wall_s"])}
                print_table("buffering (pgvector)", [{"variant": "direct", **direct}, {"variant": "buffered", **buffered}],
                            ["variant", "vectors", "writers", "wall_s", "writers_done_s", "pgvector_write_transactions"])
            except ServerUnavailable as exc:
                result["errors"]["buffering"] = str(exc)
        if "bm25" in parts:
            try:
                result["bm25"] = bm25(srv, args.scifact)
                print_table("bm25 (all of SciFact)", [{"store": k, **v} for k, v in result["bm25"].items()],
                            ["store", "index_s", "p50_ms", "p99_ms", "ndcg@10", "recall@100"])
            except ServerUnavailable as exc:
                result["errors"]["bm25"] = str(exc)
    result["settings"] = {"writers": args.writers, "small_batch": args.small_batch, "repeat": args.repeat}
    path = write_result(args.name, result, env0)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
