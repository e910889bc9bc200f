"""Scale-out: documents/s with 1 vs 2 queue workers on the Redis Streams and Kafka transports, and the
Ray executor vs the local one. Servers (Redis, a Kafka-protocol broker) start here on loopback.

The corpus is the first N SciFact documents, one text file each (a job is a file).

    queue        submit every file, start W `fanrag worker` processes (each its own home, `--workers 1`),
                 poll the queue until every job is done: wall = spawn → all done. A worker's start-up
                 (Python, the model, joining the group) is measured on its own, on an empty queue, and
                 reported beside it; docs_per_s is N / (wall − start-up).
    executor     `fanrag ingest DIR --executor local|ray` in a fresh process each: process wall (Ray's
                 start-up included) and the pipeline's own wall (summary.wall_s).

Ratios: 2 workers / 1 worker (docs/s) per transport, and ray / local (pipeline wall). On a machine with C
cores and an embedder that already uses all of them, a second worker can only add what the first one
leaves idle; the closing note in the issue explains the figures.

    python bench/scaleout.py --quick     # 150 documents
    python bench/scaleout.py             # 400 documents
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, print_table, ratio, run_json_subprocess, write_result
from _servers import Servers, ServerUnavailable

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
IDLE_EXIT_S = 2.0
WAIT_S = 1800.0


def write_files(corpus: Path, n: int, out: Path) -> Path:
    """One text file per document: title, blank line, abstract."""
    out.mkdir(parents=True, exist_ok=True)
    with corpus.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            doc = json.loads(line)
            (out / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return out


def _stats(url: str) -> Any:
    from fanrag.jobs import open_transport

    async def get() -> Any:
        t = open_transport(url)
        try:
            return await t.stats()
        finally:
            await t.aclose()
    return asyncio.run(get())


def _submit(url: str, docs: Path) -> int:
    from fanrag.jobs import jobs_for, open_transport

    async def put() -> int:
        t = open_transport(url)
        try:
            return len(await t.submit(jobs_for([docs])))
        finally:
            await t.aclose()
    return asyncio.run(put())


def _spawn(url: str, home: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fanrag.cli", "worker", "--queue", url, "--home", str(home), "--workers", "1",
           "--idle-exit", str(IDLE_EXIT_S), "--json"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def startup_s(url: str, tmp: Path) -> float:
    """A worker on an empty queue: spawn → exit, less the idle wait."""
    t0 = time.perf_counter()
    proc = _spawn(url, tmp / f"home-empty-{uuid.uuid4().hex[:6]}", tmp / "empty.log")
    proc.wait(WAIT_S)
    return time.perf_counter() - t0 - IDLE_EXIT_S


def queue_run(url: str, docs: Path, n: int, workers: int, tmp: Path) -> dict[str, Any]:
    submitted = _submit(url, docs)
    assert submitted == n, (submitted, n)
    t0 = time.perf_counter()
    procs = [_spawn(url, tmp / f"home-{uuid.uuid4().hex[:6]}", tmp / f"w{i}.log") for i in range(workers)]
    done = 0
    while done < n:
        if time.perf_counter() - t0 > WAIT_S or all(p.poll() is not None for p in procs):
            break
        time.sleep(0.1)
        done = _stats(url).done
    wall = time.perf_counter() - t0
    per_worker = []
    for i, p in enumerate(procs):
        try:
            p.wait(60 + IDLE_EXIT_S)
        except subprocess.TimeoutExpired:  # it should have seen the queue drained: stop it, report what it did
            p.terminate()
            p.wait(60)
        lines = [ln for ln in (tmp / f"w{i}.log").read_text().splitlines() if ln.startswith("{")]
        per_worker.append(json.loads(lines[-1])["ok"] if lines else None)
    return {"workers": workers, "docs": n, "done": done, "wall_s": wall, "docs_per_worker": per_worker}


def executor_run(docs: Path, executor: str, tmp: Path) -> dict[str, Any]:
    home = tmp / f"home-{executor}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    out = run_json_subprocess(["-m", "fanrag.cli", "ingest", str(docs), "--home", str(home), "--executor", executor,
                               "--json"], timeout_s=WAIT_S)
    wall = time.perf_counter() - t0
    if "error" in out:
        return {"error": out["error"]}
    return {"process_wall_s": wall, "pipeline_wall_s": out["wall_s"], "docs": out["ok"],
            "docs_per_s": out["ok"] / out["wall_s"], "embed_s": out["stages"]["embed"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scifact", type=Path, default=SCIFACT)
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="150 documents")
    ap.add_argument("--parts", default="redis,kafka,executor")
    args = ap.parse_args(argv)
    n = 150 if args.quick else args.docs
    parts = set(args.parts.split(","))
    env0 = environment()
    tmp = Path(tempfile.mkdtemp(prefix="fanrag-bench-scaleout-"))
    docs = write_files(args.scifact / "corpus.jsonl", n, tmp / "docs")
    result: dict[str, Any] = {"docs": n, "errors": {}, "queue": {}, "executor": {}}
    with Servers() as srv:
        urls = {}
        try:
            if "redis" in parts:
                urls["redis"] = lambda: f"{srv.redis_url}?stream=bench-{uuid.uuid4().hex[:8]}"
            if "kafka" in parts:
                # batch_bytes=1: tansu misreports a partition's end offset after a batched produce, so the
                # lag (and a worker's --idle-exit) would never reach 0; real Kafka needs no such setting.
                # A group per run: a worker that left a group at generation 0 stays a member on tansu until
                # its session times out, and would hold up the next run's join.
                urls["kafka"] = lambda: (f"kafka://{srv.kafka_address}/bench-{uuid.uuid4().hex[:8]}"
                                         f"?partitions=4&batch_bytes=1&group=g-{uuid.uuid4().hex[:8]}")
        except ServerUnavailable as exc:
            result["errors"]["servers"] = str(exc)
        for name, make_url in urls.items():
            try:
                start = startup_s(make_url(), tmp)
                runs = {w: queue_run(make_url(), docs, n, w, tmp) for w in (1, 2)}
            except ServerUnavailable as exc:
                result["errors"][name] = str(exc)
                continue
            for r in runs.values():
                r["startup_s"] = start
                r["docs_per_s"] = r["done"] / max(r["wall_s"] - start, 1e-9)
            result["queue"][name] = {"1": runs[1], "2": runs[2],
                                     "two_over_one_docs_per_s": ratio(runs[2]["docs_per_s"], runs[1]["docs_per_s"])}
        if result["queue"]:
            print_table("queue workers", [{"transport": k, **v[w]} for k, v in result["queue"].items() for w in ("1", "2")],
                        ["transport", "workers", "done", "wall_s", "startup_s", "docs_per_s"])
            print({k: v["two_over_one_docs_per_s"] for k, v in result["queue"].items()})
        if "executor" in parts:
            runs = {ex: executor_run(docs, ex, tmp) for ex in ("local", "ray")}
            result["executor"] = {**runs, "ray_over_local_pipeline_wall": ratio(
                runs["ray"].get("pipeline_wall_s", 0), runs["local"].get("pipeline_wall_s", 0)),
                "ray_over_local_process_wall": ratio(runs["ray"].get("process_wall_s", 0),
                                                     runs["local"].get("process_wall_s", 0))}
            print_table("executor", [{"executor": k, **v} for k, v in runs.items()],
                        ["executor", "docs", "process_wall_s", "pipeline_wall_s", "docs_per_s", "embed_s"])
    path = write_result("scaleout", result, env0)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
