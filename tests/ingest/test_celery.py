"""The Celery executor against a real redis-server and real ``celery worker`` processes: same chunks as a
local run, the chord callback once, poison files, and a writer killed with SIGKILL in the middle of a run."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from fanrag.engine import Engine
from fanrag.errors import MissingExtraError

from ..conftest import make_settings
from ..servers.redis import start_redis
from .test_pipeline import write_corpus

pytest.importorskip("celery", reason="Celery tests need: pip install 'fanrag[celery]'")

from fanrag.ingest.celery import CeleryConfig, finalised_count, ingest_with_celery

WAIT_S = 120.0  # a safety net for a hung worker, not a speed requirement
ENTRIES = [{"_id": f"e{i}", "title": f"Entry {i}", "text": f"Entry {i} is about the tides of moon {i % 3}."}
           for i in range(9)]


class Worker:
    """One ``celery worker`` process (its own session, so a kill reaches its pool's children too)."""

    def __init__(self, broker: str, queue: str, log: Path, *, pool: str = "solo",
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "celery", "-A", "fanrag.ingest.celery.worker", "worker", "-Q", queue,
               "--pool", pool, "--concurrency", "1", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-n", f"{queue}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"]
        env = {**os.environ, "FANRAG_CELERY_BROKER": broker, **(env or {})}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        _until(lambda: " ready." in log.read_text(errors="replace") or self.proc.poll() is not None,
               f"worker on {queue} ready")
        assert self.proc.poll() is None, log.read_text()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _until(cond: Callable[[], bool], what: str, wait_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    handle = start_redis(tmp_path_factory.mktemp("celery-redis"), persist=False)
    try:
        yield handle.url
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def workers(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    """A load/chunk + embed worker (prefork, one child) and the writer, shared by the module's runs."""
    logs = tmp_path_factory.mktemp("celery-logs")
    work = Worker(broker, "fanrag", logs / "work.log", pool="prefork")
    writer = Worker(broker, "fanrag.write", logs / "write.log")
    try:
        yield work, writer
    finally:
        work.stop()
        writer.stop()


def _settings(home: Path):
    return make_settings(home, pipeline={"pdf_page_threshold": 2, "pages_per_range": 1,
                                         "jsonl_docs_per_job": 4})


def _index(home: Path) -> dict:
    """Every committed document's chunks (ids and texts) and each store's count."""
    with Engine.open(home, mode="read") as engine:
        meta = engine.stores.meta
        docs = {d.doc_id: d for d in meta.documents(status="committed")}
        ids = meta.chunk_ids_of(sorted(docs))
        chunks = meta.get_chunks(ids)
        return {"chunks": {cid: chunks[cid].text for cid in ids},
                "docs": {d.doc_id: (d.source, d.n_chunks, d.n_pages, d.title) for d in docs.values()},
                "counts": {"meta": sum(d.n_chunks for d in docs.values()),
                           "vectors": engine.stores.vectors.count(),
                           "keywords": engine.stores.keywords.count(), "graph": engine.stores.graph.stats()}}


def test_same_chunks_as_a_local_run_and_the_chord_fires_once(tmp_path: Path, broker: str, workers) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "entries.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ENTRIES))
    with Engine.open(settings=_settings(tmp_path / "local")) as engine:
        local = engine.ingest([corpus])
    run_id = uuid.uuid4().hex
    summary = ingest_with_celery([corpus], _settings(tmp_path / "celery"), broker_url=broker, timeout=WAIT_S,
                                 run_id=run_id)
    assert summary.failed == []
    assert (summary.sources, summary.ok, summary.chunks, summary.pages) == \
        (local.sources, local.ok, local.chunks, local.pages)
    expected, got = _index(tmp_path / "local"), _index(tmp_path / "celery")
    assert got["chunks"] == expected["chunks"] and got["docs"] == expected["docs"]
    assert got["counts"] == expected["counts"]
    assert len({got["counts"]["meta"], got["counts"]["vectors"], got["counts"]["keywords"]}) == 1

    again = ingest_with_celery([corpus], _settings(tmp_path / "celery"), broker_url=broker, timeout=WAIT_S)
    assert (again.ok, again.chunks, again.unchanged, again.failed) == (0, 0, local.ok, [])
    assert _index(tmp_path / "celery") == got
    assert finalised_count(run_id, CeleryConfig(broker_url=broker)) == 1


def test_a_poison_file_is_a_failure_record_and_the_chord_still_fires(tmp_path: Path, broker: str,
                                                                      workers) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Tides\n\nThe moon raises the water twice a day.\n")
    (docs / "poison.txt").write_bytes(b"\x00\x01\x02binary\xff\xfe" * 20)
    (docs / "empty.txt").write_bytes(b"")
    run_id = uuid.uuid4().hex
    summary = ingest_with_celery([docs, tmp_path / "missing.md"], _settings(tmp_path / "home"),
                                 broker_url=broker, timeout=WAIT_S, run_id=run_id)
    failed = {Path(path).name: reason for path, reason in summary.failed}
    assert set(failed) == {"poison.txt", "empty.txt", "missing.md"}, failed
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert (summary.ok, summary.sources, summary.exit_code) == (1, 3, 1)
    assert finalised_count(run_id, CeleryConfig(broker_url=broker)) == 1
    with Engine.open(tmp_path / "home", mode="read") as engine:
        recorded = {Path(s.uri).name: s.status for s in engine.stores.meta.sources()}
    assert recorded == {"good.md": "committed", "poison.txt": "failed", "empty.txt": "failed"}


N_KILL = 24


def test_writer_killed_mid_run_then_restarted_gives_every_document_once(tmp_path: Path) -> None:
    """SIGKILL the writer after its first commit: its unacknowledged task goes back to the queue after the
    visibility timeout, the restarted writer redoes it (delete + write + commit), and the chord fires once."""
    redis = start_redis(tmp_path / "redis", persist=False)
    env = {"FANRAG_CELERY_VISIBILITY_TIMEOUT": "2", "FANRAG_CELERY_RESTORE_INTERVAL": "1"}
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(N_KILL):
        (docs / f"doc{i:02d}.md").write_text(f"# Note {i}\n\n" + f"Tide table {i}: moon lifts seas. " * 60)
    home = tmp_path / "home"
    work = Worker(redis.url, "fanrag", tmp_path / "work.log", env=env)
    writers: list[Worker] = []
    done: Future = Future()
    run_id = uuid.uuid4().hex
    config = CeleryConfig(broker_url=redis.url, visibility_timeout=2, restore_interval=1)

    threading.Thread(target=lambda: _into(done, ingest_with_celery, [docs], _settings(home), config=config,
                                          timeout=WAIT_S, run_id=run_id), daemon=True).start()
    try:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)
        _until(lambda: client.llen("fanrag.write") >= N_KILL, "every chain at its write step")
        writers.append(Worker(redis.url, "fanrag.write", tmp_path / "write1.log", env=env))
        _until(lambda: _committed(home / "meta.sqlite") >= 1, "a first commit")
        writers[0].kill()
        assert _committed(home / "meta.sqlite") < N_KILL, "the writer finished before it could be killed"
        assert not done.done()
        writers.append(Worker(redis.url, "fanrag.write", tmp_path / "write2.log", env=env))
        summary = done.result(WAIT_S)
        assert finalised_count(run_id, config) == 1
    finally:
        for w in [work, *writers]:
            w.stop()
        redis.stop()
    assert summary.failed == [] and summary.sources == N_KILL
    index = _index(home)
    assert len(index["docs"]) == N_KILL
    counts = index["counts"]
    assert counts["meta"] == counts["vectors"] == counts["keywords"], counts
    names = sorted(Path(src).name for src, *_ in index["docs"].values())
    assert names == sorted(p.name for p in docs.iterdir())


def test_a_killed_work_process_is_replaced_and_its_task_redone(tmp_path: Path, broker: str, workers) -> None:
    """SIGKILL the work worker's pool process mid-task: ``task_reject_on_worker_lost`` puts its task back
    at once, the new pool process redoes it, and every document is committed once."""
    work, _ = workers
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(N_KILL):
        (docs / f"doc{i:02d}.md").write_text(f"# Item {i}\n\n" + f"Shipping forecast {i}: gales ahead. " * 60)
    home = tmp_path / "home"
    done: Future = Future()
    threading.Thread(target=lambda: _into(done, ingest_with_celery, [docs], _settings(home),
                                          broker_url=broker, timeout=WAIT_S), daemon=True).start()
    import redis as redis_py

    client = redis_py.Redis.from_url(broker)
    before = work.log.read_text().count("succeeded")
    # Killed while busy: a few tasks done, many still queued (the one pool process takes one at a time).
    _until(lambda: work.log.read_text().count("succeeded") >= before + 5, "some tasks done")
    lost = work.log.read_text().count("WorkerLostError")
    killed: list[int] = []

    def replaced() -> bool:
        alive = [c for c in _children(work.proc.pid) if c not in killed]
        return len(alive) == 1

    while work.log.read_text().count("WorkerLostError") == lost:  # a kill between two tasks loses none: again
        assert len(killed) < 5 and client.llen("fanrag") >= 2, f"no task lost after {len(killed)} kills"
        _until(replaced, "a pool process")
        time.sleep(0.3)  # the pool logs the lost task as it starts the replacement
        if killed and work.log.read_text().count("WorkerLostError") > lost:
            break
        killed.append(next(c for c in _children(work.proc.pid) if c not in killed))
        os.kill(killed[-1], signal.SIGKILL)
    summary = done.result(WAIT_S)
    assert (summary.ok, summary.failed) == (N_KILL, [])
    assert not set(_children(work.proc.pid)) & set(killed)  # replaced
    index = _index(home)
    counts = index["counts"]
    assert len(index["docs"]) == N_KILL and counts["meta"] == counts["vectors"] == counts["keywords"], counts


def test_cli_celery_ingest(tmp_path: Path, broker: str, workers) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Tides\n\nThe moon raises the water twice a day.\n")
    result = CliRunner().invoke(cli, ["celery-ingest", str(docs), "--home", str(tmp_path / "home"),
                                      "--broker", broker, "--timeout", str(WAIT_S), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 1


def test_an_empty_run_still_finalises_once(tmp_path: Path, broker: str, workers) -> None:
    (tmp_path / "empty").mkdir()
    run_id = uuid.uuid4().hex
    summary = ingest_with_celery([tmp_path / "empty"], _settings(tmp_path / "home"), broker_url=broker,
                                 timeout=WAIT_S, run_id=run_id)
    assert (summary.sources, summary.ok, summary.failed) == (0, 0, [])
    assert finalised_count(run_id, CeleryConfig(broker_url=broker)) == 1


def test_a_task_that_keeps_killing_its_worker_becomes_a_failure_record(tmp_path: Path, broker: str) -> None:
    """With task_reject_on_worker_lost a file that crashes its worker would come back forever: after
    ``max_attempts`` deliveries its chain records a failure instead (the chord still fires)."""
    from types import SimpleNamespace

    import redis as redis_py

    from fanrag.ingest.celery.messages import DocWork, RunInfo
    from fanrag.ingest.celery.tasks import _step
    from fanrag.ingest.sources import SourceFile

    client = redis_py.Redis.from_url(broker)
    task = SimpleNamespace(request=SimpleNamespace(id=uuid.uuid4().hex, retries=0),
                           app=SimpleNamespace(backend=SimpleNamespace(client=client),
                                               conf={"fanrag_max_attempts": 3}))
    client.set(f"fanrag:celery:deliveries:{task.request.id}", 3)  # three deliveries whose worker died
    src = SourceFile(path=str(tmp_path / "crash.pdf"), uri="file:///crash.pdf")
    work = _step(task, DocWork(RunInfo("r", _settings(tmp_path / "home")), src), "load/chunk",
                 lambda _: pytest.fail("a poison file ran again"))
    assert work.plan == f"{src.path}: load/chunk: its worker died 3 times on this file"
    assert client.exists(f"fanrag:celery:deliveries:{task.request.id}") == 0  # recorded: forgotten


SUBMITTER = """
import json, sys, weakref
from celery import signals
from fanrag.ingest.celery import ingest_with_celery
from tests.conftest import make_settings

home, docs, broker = sys.argv[1:4]
summary = ingest_with_celery([docs], make_settings(home), broker_url=broker, timeout=120)


def ours(signal):
    found = (r() if isinstance(r, weakref.ReferenceType) else r for _, r in signal.receivers)
    return [f"{f.__module__}.{f.__qualname__}" for f in found if getattr(f, "__module__", "").startswith("fanrag")]


print(json.dumps({"ok": summary.ok, "tasks_imported": "fanrag.ingest.celery.tasks" in sys.modules,
                  "handlers": ours(signals.worker_shutdown) + ours(signals.worker_process_shutdown)}))
"""


def test_the_submitter_registers_no_worker_code(tmp_path: Path, broker: str, workers) -> None:
    """A process that submits a run (``fanrag celery-ingest``, an application) neither registers the tasks
    nor connects the worker's shutdown handlers (which close index stores it never opened)."""
    from ..conftest import ROOT

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Tides\n\nThe moon raises the water twice a day.\n")
    out = subprocess.run([sys.executable, "-c", SUBMITTER, str(tmp_path / "home"), str(docs), broker],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"ok": 1, "tasks_imported": False, "handlers": []}


def _into(future: Future, fn: Callable, *args, **kw) -> None:
    try:
        future.set_result(fn(*args, **kw))
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        future.set_exception(exc)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM documents WHERE status = 'committed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_without_celery_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = ("celery.", "fanrag.ingest.celery")
    for name in [m for m in sys.modules if m == "celery" or m.startswith(ours)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "celery", None)  # `import celery` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'fanrag\[celery\]'"):
        importlib.import_module("fanrag.ingest.celery")
