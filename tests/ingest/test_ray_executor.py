"""The Ray executor on a real (local, 2-CPU) Ray cluster shared by the session: where the work runs, crashes
as per-file failures, and store contents identical to the local executor's."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install 'fanrag[ray]'")

from fanrag.engine import Engine
from fanrag.ids import vector_label
from fanrag.ingest.executors import WorkerCrashed, create_executor
from fanrag.ingest.executors.ray import RayClientMissing, RayExecutor
from fanrag.ingest.pipeline import IngestPipeline
from fanrag.ingest.sources import PathSource
from fanrag.ingest.work import process_part
from fanrag.settings import Settings

from ..conftest import ROOT, make_settings
from ..servers.ray import RayCluster, ray_cluster  # noqa: F401

FIXTURES = ROOT / "tests" / "fixtures"
BROKEN_PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer garbage"


def write_corpus(root: Path) -> Path:
    """Markdown and text files, a PDF split into page ranges, a JSONL collection split into line ranges,
    and a broken PDF."""
    root.mkdir(parents=True)
    (root / "alpha.txt").write_text("Alpha particles are helium nuclei. " * 100 + "\n\nPaper stops them.\n")
    (root / "beta.md").write_text("# Beta decay\n\nBeta decay emits an electron.\n\n## Detection\n\n"
                                  + "Geiger counters in Berlin detect beta radiation. " * 30)
    (root / "gamma.md").write_text("# Gamma rays\n\n" + "Marie Curie studied gamma rays in Paris. " * 40)
    shutil.copy(FIXTURES / "three-pages.pdf", root / "manual.pdf")
    shutil.copy(FIXTURES / "collection.jsonl", root / "collection.jsonl")
    (root / "broken.pdf").write_bytes(BROKEN_PDF)
    return root


def split_settings(home: Path, executor: str) -> Settings:
    # Tiny thresholds: the 3-page PDF becomes 3 page ranges and the JSONL file 3 line ranges.
    return make_settings(home, pipeline={"executor": executor, "pdf_page_threshold": 2, "pages_per_range": 1,
                                         "jsonl_docs_per_job": 2})


# -------------------------------------------------------------------------------- the executor itself

@pytest.fixture(scope="class")
def executor(ray_cluster: RayCluster) -> Iterator[RayExecutor]:  # noqa: F811
    # Two actors on 2 CPUs reserve 0.5 CPU each, so one CPU stays free for tasks. Closed at the end of the
    # class: an executor created later (by Engine.ingest) needs the CPUs these actors reserve.
    ex = RayExecutor(Settings().embed, actors=2)
    yield ex
    ex.close()


class TestRayExecutor:

    def test_joins_the_running_cluster_and_sizes_from_it(self, executor: RayExecutor) -> None:
        assert executor.workers == 2 and executor.actors == 2

    def test_map_cpu_runs_in_a_ray_worker(self, executor: RayExecutor) -> None:
        pid = asyncio.run(executor.map_cpu(os.getpid))
        assert pid != os.getpid()
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert title.startswith(b"ray::"), title  # Ray names its worker processes "ray::<task>"

    def test_map_cpu_leaves_the_event_loop_free(self, executor: RayExecutor) -> None:
        async def ticks_while_a_task_sleeps() -> int:
            job = asyncio.ensure_future(executor.map_cpu(time.sleep, 1.0))
            ticks = 0
            while not job.done():
                await asyncio.sleep(0.05)
                ticks += 1
            await job
            return ticks

        assert asyncio.run(ticks_while_a_task_sleeps()) >= 10

    def test_worker_crash_is_worker_crashed(self, executor: RayExecutor) -> None:
        with pytest.raises(WorkerCrashed, match="Ray worker died"):
            asyncio.run(executor.map_cpu(os._exit, 3))
        assert asyncio.run(executor.map_cpu(os.getpid)) > 0  # and the executor still works

    def test_fanrag_errors_come_back_as_themselves(self, executor: RayExecutor, tmp_path: Path) -> None:
        from fanrag.errors import EmptyDocument
        from fanrag.ingest.loaders import load

        (tmp_path / "empty.txt").write_text("")
        with pytest.raises(EmptyDocument, match="empty.txt"):
            asyncio.run(executor.map_cpu(partial(load, uri="file:///empty.txt"), tmp_path / "empty.txt"))

    def test_embed_runs_on_the_actors(self, executor: RayExecutor, embedder) -> None:
        texts = [f"Sentence number {i} about {'radiation ' * (i % 7)}detectors." for i in range(40)]
        batches = [texts[i:i + 10] for i in range(0, 40, 10)]

        async def embed_all() -> list[np.ndarray]:
            return await asyncio.gather(*(executor.embed(b) for b in batches))

        before = {i["pid"]: i["calls"] for i in executor.actor_info()}
        vectors = asyncio.run(embed_all())
        after = executor.actor_info()
        assert len(after) == 2 and os.getpid() not in {i["pid"] for i in after}
        assert sorted(i["calls"] - before[i["pid"]] for i in after) == [2, 2]  # least busy, then round-robin
        for batch, got in zip(batches, vectors, strict=True):
            assert got.flags.writeable
            assert np.array_equal(got, embedder.embed(batch))  # same batches, same int8 model: same bits


def test_ray_client_without_grpc_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(RayClientMissing, match=r"pip install 'ray\[client\]'"):
        RayExecutor(Settings().embed, address="ray://127.0.0.1:10001")


# -------------------------------------------------------------------------------- in the pipeline

def store_contents(engine: Engine) -> dict[str, Any]:
    """Everything committed, per document: its record, its chunks in order, and their vectors."""
    meta = engine.stores.meta
    store = engine.stores.vectors

    def vectors_of(chunk_ids: list[str]) -> np.ndarray:  # what the HNSW shards hold, bit for bit
        labels = [vector_label(cid) for cid in chunk_ids]
        return np.array([store._shards[lab % store.n_shards].get_items([lab])[0] for lab in labels], np.float32)

    docs = {}
    for d in meta.documents(status="committed"):
        chunks = sorted(meta.get_chunks(meta.chunk_ids_of([d.doc_id])).values(), key=lambda c: c.position)
        assert [c.position for c in chunks] == list(range(d.n_chunks))
        docs[d.doc_id] = {
            "record": (d.uri.rsplit("/", 1)[-1], d.title, d.content_hash, d.n_pages, d.n_chunks, d.metadata),
            "chunks": [(c.chunk_id, c.text, c.char_start, c.char_end, c.page_start, c.page_end, c.n_tokens,
                        c.metadata, c.entities) for c in chunks],
            "vectors": vectors_of([c.chunk_id for c in chunks]),
        }
    status = engine.status()
    counts = {k: getattr(status, k) for k in ("vectors", "keyword_chunks", "graph")}
    return {"docs": docs, "counts": counts}


def test_ray_and_local_executors_write_identical_stores(tmp_path: Path, ray_cluster: RayCluster) -> None:  # noqa: F811
    corpus = write_corpus(tmp_path / "corpus")
    results = {}
    for executor in ("local", "ray"):
        # The default int8 embedder: it runs one input per forward pass, so a vector depends on its own text
        # only (in a batch, int8 activation scales would depend on the batch-mates, which differ by run).
        settings = split_settings(tmp_path / executor, executor)
        with Engine.open(settings=settings) as engine:
            summary = engine.ingest([corpus])
            results[executor] = (summary, store_contents(engine))
    (local, want), (ray_run, got) = results["local"], results["ray"]
    assert (ray_run.ok, ray_run.chunks, ray_run.pages) == (local.ok, local.chunks, local.pages)
    assert local.pages >= 3 and local.ok >= 5  # the split PDF, the JSONL entries, the text files
    failed = sorted((Path(p).name, r) for p, r in ray_run.failed)
    assert failed == sorted((Path(p).name, r) for p, r in local.failed)
    assert "broken.pdf" in {name for name, _ in failed}  # a bad file is a per-file failure, named
    assert got["counts"] == want["counts"] and got["counts"]["vectors"] == local.chunks
    assert got["docs"].keys() == want["docs"].keys()
    for doc_id, doc in want["docs"].items():
        assert got["docs"][doc_id]["record"] == doc["record"], doc_id
        assert got["docs"][doc_id]["chunks"] == doc["chunks"], doc_id
        np.testing.assert_allclose(got["docs"][doc_id]["vectors"], doc["vectors"], rtol=0, atol=1e-6, err_msg=doc_id)


class _CrashOn:
    """The Ray executor, except that loading the file named ``name`` kills its Ray worker."""

    name = "ray"

    def __init__(self, inner: RayExecutor, name: str) -> None:
        self.inner, self.crash_name, self.workers = inner, name, inner.workers
        self.embed_slots = inner.embed_slots

    async def map_cpu(self, fn: Any, *args: Any) -> Any:
        if fn is process_part and Path(args[0].plan.source.path).name == self.crash_name:
            return await self.inner.map_cpu(os._exit, 3)
        return await self.inner.map_cpu(fn, *args)

    async def embed(self, texts: Any) -> np.ndarray:
        return await self.inner.embed(texts)

    def close(self) -> None:
        self.inner.close()


def test_a_crashed_ray_worker_fails_only_its_file(tmp_path: Path, ray_cluster: RayCluster) -> None:  # noqa: F811
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text("# Tides\n\nThe moon raises tides. " * 20)
    (corpus / "crash.md").write_text("# Segfault\n\nThis parser run dies. " * 20)
    settings = split_settings(tmp_path / "home", "ray")
    with Engine.open(settings=settings) as engine:
        executor = _CrashOn(create_executor(settings, engine.embedder), "crash.md")  # type: ignore[arg-type]
        try:
            pipeline = IngestPipeline(settings, engine.stores, engine.embedder, executor)  # type: ignore[arg-type]
            summary = asyncio.run(pipeline.arun(PathSource([corpus], exclude=[settings.home])))
        finally:
            executor.close()
        assert summary.ok == 1 and engine.status().vectors == summary.chunks > 0
    assert [(Path(p).name, "Ray worker died" in r) for p, r in summary.failed] == [("crash.md", True)]


def run_cli_ingest(tmp_path: Path, executor: str, **env: str) -> tuple[int, dict[str, Any], str]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tides.md").write_text("# Tides\n\nThe moon's gravity raises tides on Earth. " * 10)
    (corpus / "broken.pdf").write_bytes(BROKEN_PDF)
    full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env}
    full_env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fanrag.cli", "ingest", str(corpus), "--home", str(tmp_path / "home"), "--json",
         "--workers", "2", "--executor", executor],
        check=False, capture_output=True, text=True, env=full_env, timeout=120)
    return proc.returncode, json.loads(proc.stdout or "{}"), proc.stderr


def test_cli_ingest_joins_a_cluster_by_address(tmp_path: Path, ray_cluster: RayCluster) -> None:  # noqa: F811
    code, summary, stderr = run_cli_ingest(tmp_path, f"ray:{ray_cluster.address}")
    assert code == 1, stderr  # 1: a file failed
    assert summary["ok"] == 1 and summary["chunks"] > 0
    assert [Path(f["source"]).name for f in summary["failed"]] == ["broken.pdf"]


@pytest.mark.slow  # a second Ray instance: ~6 s and ~800 MB more
def test_cli_ingest_starts_and_stops_its_own_ray(tmp_path: Path) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        code, summary, stderr = run_cli_ingest(tmp_path, "ray", RAY_TMPDIR=ray_tmp)
        assert code == 1, stderr
        assert summary["ok"] == 1 and "Started a local Ray instance" in stderr
        sessions = list(Path(ray_tmp).glob("ray/session_2*")) or list(Path(ray_tmp).glob("session_2*"))
        assert sessions, list(Path(ray_tmp).rglob("*"))[:5]  # it used our temp dir, so it was a new local Ray
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
