"""Vector store at scale: N synthetic 384-d vectors in the sharded HNSW store (``ShardedHnswStore``).

Reports build time (adds, including the store's durable log, plus the final checkpoint), the RSS the
store added, query latency p50/p99 over 1,000 single queries, and recall@10 against exact search.

The data are clustered, not uniform: uniform random vectors in 384 dimensions are all nearly
orthogonal, so "nearest neighbours" are noise and recall numbers mean nothing. Here ``clusters``
unit-norm centres each get points at a small spread around them, and queries are drawn near random
centres, like embeddings of topical text. Vectors are generated block by block from per-block seeds,
so the exact search regenerates them instead of holding N x 384 floats beside the index.

    python bench/scale.py --quick            # 50,000 vectors
    python bench/scale.py --n 1000000        # the full run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, percentile, print_table, timed, tree_rss_mb, write_result

DIM = 384
BLOCK = 20_000


def centres(clusters: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    c = rng.standard_normal((clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(cents: np.ndarray, which: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near the chosen centres: centre + noise whose norm is about ``spread``."""
    dim = cents.shape[1]
    noise = rng.standard_normal((len(which), dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    v = cents[which] + noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def vector_block(cents: np.ndarray, start: int, stop: int, spread: float, seed: int) -> np.ndarray:
    """Vectors [start, stop) of the dataset: the same numbers on every call (seeded by block start)."""
    rng = np.random.default_rng([seed, 1, start])
    which = rng.integers(0, len(cents), size=stop - start)
    return around(cents, which, spread, rng)


def blocks(n: int, block: int = BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, n, block):
        yield start, min(start + block, n)


def queries(cents: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2])
    return around(cents, rng.integers(0, len(cents), size=n), spread, rng)


def exact_topk(q: np.ndarray, cents: np.ndarray, n: int, k: int, spread: float, seed: int,
               block: int = BLOCK) -> np.ndarray:
    """Indices of the exact top-k inner products (= cosine, unit vectors), block by block."""
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for start, stop in blocks(n, block):
        s = q @ vector_block(cents, start, stop, spread, seed).T
        kk = min(k, stop - start)
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    return best_i


def recall_at_k(found: list[list[int]], exact: np.ndarray, k: int) -> float:
    """Mean |found ∩ exact| / k over queries."""
    hits = [len(set(f[:k]) & set(e[:k].tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / k if hits else 0.0


def _chunk_id(i: int) -> str:
    from fanrag.ids import chunk_id

    return chunk_id(f"v{i}", 0, "")


def index_of(chunk_id: str) -> int:
    """The vector number back from a chunk id made by ``_chunk_id``."""
    return int(chunk_id.split("-", 1)[0][1:])


def build(store: object, cents: np.ndarray, n: int, spread: float, seed: int) -> float:
    from fanrag.types import Chunk

    t0 = time.perf_counter()
    for start, stop in blocks(n):
        vecs = vector_block(cents, start, stop, spread, seed)
        chunks = [Chunk(chunk_id=_chunk_id(i), doc_id=f"v{i}", position=0, text="", char_start=0, char_end=0)
                  for i in range(start, stop)]
        store.add(chunks, vecs)  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def run(n: int, clusters: int, spread: float, n_queries: int, k: int, shards: int, seed: int,
        workdir: Path, checkpoint_every: int) -> dict[str, object]:
    from fanrag.settings import HnswSettings
    from fanrag.stores.vectors_hnsw import ShardedHnswStore

    vs = HnswSettings()
    cents = centres(clusters, DIM, seed)
    qs = queries(cents, n_queries, spread, seed)
    rss0 = tree_rss_mb()
    store = ShardedHnswStore(workdir / "vectors", DIM, shards=shards, m=vs.m, ef_construction=vs.ef_construction,
                             ef_search=vs.ef_search, checkpoint_every=checkpoint_every)
    try:
        build_s = build(store, cents, n, spread, seed)
        rss_built = tree_rss_mb()
        store.search(qs[0], k)  # warm-up
        found: list[list[int]] = []
        lat: list[float] = []
        for q in qs:
            t = time.perf_counter()
            hits = store.search(q, k)
            lat.append((time.perf_counter() - t) * 1000)
            found.append([index_of(h.chunk_id) for h in hits])
    finally:
        store.close()
    with timed() as t_exact:
        exact = exact_topk(qs, cents, n, k, spread, seed)
    return {"n": n, "dim": DIM, "clusters": clusters, "spread": spread, "shards": shards, "m": vs.m,
            "ef_construction": vs.ef_construction, "ef_search": vs.ef_search, "checkpoint_every": checkpoint_every,
            "build_s": build_s, "vectors_per_s": n / build_s if build_s else None,
            "rss_delta_mb": rss_built - rss0, "raw_vectors_mb": n * DIM * 4 / (1 << 20),
            "queries": n_queries, "query_p50_ms": percentile(lat, 50), "query_p99_ms": percentile(lat, 99),
            f"recall@{k}": recall_at_k(found, exact, k), "exact_search_s": t_exact.seconds,
            "disk_mb": sum(f.stat().st_size for f in (workdir / "vectors").iterdir()) / (1 << 20)
            if (workdir / "vectors").exists() else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 vectors")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=0.5,
                    help="noise norm around a unit centre; 0.5 gives neighbours at cosine ~0.8, like topical text")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--shards", type=int, default=None, help="default: hnsw.shards from the settings")
    ap.add_argument("--checkpoint-every", type=int, default=None, help="default: vectors.checkpoint_every")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the index (default: a temp dir)")
    ap.add_argument("--name", default="scale")
    args = ap.parse_args(argv)
    from fanrag.settings import HnswSettings

    vs = HnswSettings()
    n = 50_000 if args.quick else args.n
    env0 = environment()
    workdir = Path(tempfile.mkdtemp(prefix="fanrag-scale-", dir=args.dir))
    try:
        res = run(n, args.clusters, args.spread, args.queries, args.k, args.shards or vs.shards, args.seed, workdir,
                  args.checkpoint_every or vs.checkpoint_every)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    path = write_result(args.name, {"quick": args.quick, "result": res}, env0)
    print_table(f"sharded HNSW store, {n:,} x {DIM}-d clustered vectors", [res],
                ["n", "shards", "build_s", "vectors_per_s", "rss_delta_mb", "query_p50_ms", "query_p99_ms",
                 f"recall@{args.k}"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
