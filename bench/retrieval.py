"""Retrieval latency on an index of SciFact: the 300 test claims through the full retrieval path
(transform -> fan-out -> RRF -> committed chunks; no rerank, no LLM), parallel and sequential.

For every query the same branches run twice, once concurrently (the default) and once one after
another (``aretrieve(parallel=False)``), in alternating order so neither run always gets the warm cache.
Reported:

    latency       p50/p95/p99 of the parallel and the sequential retrieval (ms), and of the full
                  query with the extractive answer
    fan-out       wall time of the concurrent fan-out / its slowest branch (target <= 1.15)
                  wall time of the concurrent fan-out / the sequential run's fan-out (target <= 0.6)

    python bench/retrieval.py --home /work/bench-home/scifact
    python bench/retrieval.py --home H --quick          # first 100 queries

Numbers taken while the machine is busy (see environment.loadavg) are not worth comparing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, percentile, print_table, ratio, write_result

from fanrag.engine import Engine
from fanrag.retrieve import Retriever
from fanrag.settings import Settings

DATA = Path("/work/shared/data/scifact")
TARGET_SLOWEST = 1.15
TARGET_SEQUENTIAL = 0.6


def load_queries(data: Path) -> list[tuple[str, str]]:
    """(query id, text) of the queries the test qrels judge, in file order."""
    judged = set()
    with (data / "qrels" / "test.tsv").open() as f:
        next(f)  # header
        judged = {line.split("\t")[0] for line in f if line.strip()}
    out = []
    with (data / "queries.jsonl").open() as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in judged:
                out.append((str(q["_id"]), q["text"]))
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95), "p99_ms": percentile(values, 99),
            "mean_ms": sum(values) / len(values) if values else float("nan")}


async def measure(retriever: Retriever, queries: Sequence[tuple[str, str]], warmup: int) -> dict[str, Any]:
    """Run every query parallel and sequential (alternating which goes first) and the extractive query."""
    for _, text in queries[:warmup]:  # load the model's and the indexes' pages; not measured
        await retriever.aretrieve(text)
        await retriever.aretrieve(text, parallel=False)
    par: list[float] = []
    seq: list[float] = []
    full: list[float] = []
    fan_vs_slowest: list[float] = []
    fan_vs_seq: list[float] = []
    fan_vs_sum: list[float] = []
    branch_ms: dict[str, list[float]] = {}
    statuses: dict[str, dict[str, int]] = {}
    for i, (_, text) in enumerate(queries):
        if i % 2 == 0:
            p = await retriever.aretrieve(text)
            s = await retriever.aretrieve(text, parallel=False)
        else:
            s = await retriever.aretrieve(text, parallel=False)
            p = await retriever.aretrieve(text)
        full.append((await retriever.aquery(text)).total_ms)
        par.append(p.total_ms)
        seq.append(s.total_ms)
        slowest = p.slowest_branch_ms
        fan_vs_slowest.append(ratio(p.fanout_ms, slowest) or float("nan"))
        fan_vs_seq.append(ratio(p.fanout_ms, s.fanout_ms) or float("nan"))
        fan_vs_sum.append(ratio(p.fanout_ms, p.branch_sum_ms) or float("nan"))
        for name, t in p.branches.items():
            branch_ms.setdefault(name, []).append(t.ms)
            kind = t.status.split(":")[0]
            statuses.setdefault(name, {}).setdefault(kind, 0)
            statuses[name][kind] += 1
    med_par_fan = percentile(fan_vs_seq, 50)
    return {
        "queries": len(queries),
        "parallel": _stats(par),
        "sequential": _stats(seq),
        "query_with_extractive_answer": _stats(full),
        "branches_parallel": {n: _stats(v) for n, v in branch_ms.items()},
        "branch_status": statuses,
        "fanout_over_slowest_branch": {"p50": percentile(fan_vs_slowest, 50), "p95": percentile(fan_vs_slowest, 95),
                                       "target": TARGET_SLOWEST},
        "fanout_over_sequential": {"p50": med_par_fan, "p95": percentile(fan_vs_seq, 95),
                                   "target": TARGET_SEQUENTIAL},
        "fanout_over_branch_sum": {"p50": percentile(fan_vs_sum, 50), "p95": percentile(fan_vs_sum, 95)},
        "speedup_p50": ratio(percentile(seq, 50), percentile(par, 50)),
    }


def run(home: Path, data: Path, limit: int | None, warmup: int, out_dir: Path | None) -> dict[str, Any]:
    env = environment()
    settings = Settings.load(home=home)
    queries = load_queries(data)[:limit]
    with Engine.open(settings=settings, mode="read") as engine:
        retriever = engine.retriever
        stats = asyncio.run(measure(retriever, queries, warmup))
        shards = retriever.stores.vectors.n_shards
        chunks = retriever.stores.vectors.count()
    result = {
        "index": {"home": str(home), "chunks": chunks, "vector_shards": shards,
                  "embedder": f"{settings.embed.backend}/{settings.embed.model}",
                  "branches": list(settings.retrieval.branches), "transform": settings.retrieval.transform,
                  "rerank": settings.rerank.backend},
        **stats,
        "meets_targets": {
            "p50_le_15ms": stats["parallel"]["p50_ms"] <= 15.0,
            "fanout_over_slowest_le_1.15": stats["fanout_over_slowest_branch"]["p50"] <= TARGET_SLOWEST,
            "fanout_over_sequential_le_0.6": stats["fanout_over_sequential"]["p50"] <= TARGET_SEQUENTIAL,
        },
    }
    if out_dir is not None:
        path = write_result("retrieval", result, env_before=env, results_dir=out_dir)
        print(f"wrote {path}")
    return result


def report(result: dict[str, Any]) -> None:
    rows = [{"run": name, **result[name]} for name in ("parallel", "sequential", "query_with_extractive_answer")]
    rows += [{"run": f"branch {n}", **v} for n, v in result["branches_parallel"].items()]
    print_table(f"retrieval latency, {result['queries']} queries (ms)", rows,
                ["run", "p50_ms", "p95_ms", "p99_ms", "mean_ms"])
    print(f"fan-out / slowest branch  p50 {result['fanout_over_slowest_branch']['p50']:.3f} (target <= 1.15)")
    print(f"fan-out / sequential      p50 {result['fanout_over_sequential']['p50']:.3f} (target <= 0.6)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="index home with SciFact ingested")
    ap.add_argument("--data", type=Path, default=DATA, help="BEIR SciFact directory (queries.jsonl, qrels/)")
    ap.add_argument("--quick", action="store_true", help="first 100 queries only")
    ap.add_argument("--limit", type=int, default=None, help="first N queries")
    ap.add_argument("--warmup", type=int, default=20, help="queries run before measuring")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                    help="directory for retrieval.json")
    args = ap.parse_args(argv)
    limit = args.limit or (100 if args.quick else None)
    report(run(args.home, args.data, limit, args.warmup, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
