"""Executors by name (the registry, its errors, a missing optional backend: no Ray needed here), and the
local executor's process pool: embed slots, a worker that crashes, and workers whose owner is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fanrag.engine import Engine
from fanrag.errors import ConfigError, MissingExtraError
from fanrag.ingest.executors import Executor, create_executor, parse_executor
from fanrag.ingest.executors.local import LocalExecutor
from fanrag.ingest.pipeline import IngestPipeline
from fanrag.ingest.sources import JobSource, PathSource
from fanrag.ingest.summary import IngestSummary
from fanrag.ingest.work import process_part

from ..conftest import make_settings


@pytest.mark.parametrize(("name", "parsed"), [
    ("local", ("local", "")),
    ("ray", ("ray", "")),
    ("ray:10.0.0.5:6379", ("ray", "10.0.0.5:6379")),
    ("ray:auto", ("ray", "auto")),
    ("ray://head:10001", ("ray", "ray://head:10001")),
])
def test_parse_executor(name: str, parsed: tuple[str, str]) -> None:
    assert parse_executor(name) == parsed


def test_local_executor_by_name(tmp_path: Path) -> None:
    ex = create_executor(make_settings(tmp_path, pipeline={"workers": 3}), embedder=object())  # type: ignore[arg-type]
    try:
        assert isinstance(ex, LocalExecutor) and ex.workers == 3
    finally:
        ex.close()


@pytest.mark.parametrize("name", ["dask", "celery:redis://x", "local:somewhere"])
def test_unknown_executor_names_the_setting_and_the_choices(tmp_path: Path, name: str) -> None:
    settings = make_settings(tmp_path, pipeline={"executor": name})
    with pytest.raises(ConfigError) as err:
        create_executor(settings, embedder=object())  # type: ignore[arg-type]
    assert err.value.field == "pipeline.executor"
    assert "local" in err.value.reason and ("ray" in err.value.reason or "address" in err.value.reason)


def test_missing_ray_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as if not installed
    settings = make_settings(tmp_path, pipeline={"executor": "ray"})
    with pytest.raises(MissingExtraError, match=r"pip install 'fanrag\[ray\]'"):
        create_executor(settings, embedder=object())  # type: ignore[arg-type]


def test_cli_executor_option_sets_pipeline_executor(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    (tmp_path / "a.md").write_text("# A\n\nSome text.")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "a.md"), "--home", str(tmp_path / "h"), "--executor", "dask"])
    assert result.exit_code == 2 and "pipeline.executor" in result.output, result.output
    for command in ("ingest", "worker"):
        assert "--executor" in runner.invoke(cli, [command, "--help"]).output


def run_pipeline(engine: Engine, executor: Executor, source: JobSource) -> IngestSummary:
    """One pipeline run over ``engine``'s stores with ``executor`` (closed afterwards)."""
    try:
        return asyncio.run(IngestPipeline(engine.settings, engine.stores, engine.embedder, executor).arun(source))
    finally:
        executor.close()


class _TwoSlots(LocalExecutor):
    """The local executor with two embed slots, each call slowed down: records how many overlap."""

    embed_slots = 2

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.active = self.most = self.calls = 0

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        self.active += 1
        self.calls += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(0.2)
            return await super().embed(texts)
        finally:
            self.active -= 1


def test_the_pipeline_keeps_embed_slots_batches_in_flight_and_in_order(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"d{i:02d}.md").write_text(f"# Note {i}\n\nTide table {i}: the moon raises water {i} times.\n")
    # One chunk per batch (int8 output then does not depend on batch-mates): many batches to overlap.
    # No chunk headers, so that the vector stored is the embedding of the text that meta keeps.
    settings = make_settings(tmp_path / "home", embed={"batch_size": 1, "gather": 1}, chunk={"header_tokens": 0})
    with Engine.open(settings=settings) as engine:
        executor = _TwoSlots(engine.embedder, 2)
        summary = run_pipeline(engine, executor, PathSource([docs]))
        assert summary.ok == 12 and summary.failed == []
        assert executor.most == 2 and executor.calls >= 12
        # Every chunk got its own text's vector (results were not shuffled between batches).
        chunks = engine.stores.meta.get_chunks(engine.stores.meta.chunk_ids_of(
            [d.doc_id for d in engine.stores.meta.documents(status="committed")]))
        for chunk in chunks.values():
            hit = engine.stores.vectors.search(embedder.embed([chunk.text])[0], 1)[0]
            assert hit.chunk_id == chunk.chunk_id and hit.score == pytest.approx(1.0, abs=1e-3)


# -------------------------------------------------------------------------------- a crashing worker


def slow_part(job, cfg):  # type: ignore[no-untyped-def]
    """process_part, slowed down: every file is still in flight when another one's worker crashes."""
    time.sleep(0.6)
    return process_part(job, cfg)


def crash_part(job, cfg):  # type: ignore[no-untyped-def]
    """A native crash while loading a file (what a segfault in a parser does to its process)."""
    time.sleep(0.2)
    os._exit(3)


class _CrashOn(LocalExecutor):
    """The local executor, except that loading ``crash.md`` kills its worker process."""

    async def map_cpu(self, fn, *args):  # type: ignore[no-untyped-def]
        if fn is process_part:
            fn = crash_part if Path(args[0].plan.source.path).name == "crash.md" else slow_part
        return await super().map_cpu(fn, *args)


def test_a_crashed_worker_fails_only_its_file_and_the_files_in_flight_with_it_commit(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    names = ["a.md", "b.md", "crash.md", "d.md", "e.md", "f.md"]
    for name in names:
        (docs / name).write_text(f"# {name}\n\nThe tide tables of {name} list high water twice a day.\n")
    settings = make_settings(tmp_path / "home")  # 2 workers: 4 CPU jobs in flight
    with Engine.open(settings=settings) as engine:
        executor = _CrashOn(engine.embedder, 2)
        summary = run_pipeline(engine, executor, PathSource([docs]))
        assert [(Path(p).name, r) for p, r in summary.failed] == [
            ("crash.md", "a worker process crashed while processing this file")]
        assert summary.ok == len(names) - 1
        assert executor.generation >= 1  # the shared pool broke (and was replaced) under the other files
        committed = {Path(s.uri).name: s.status for s in engine.stores.meta.sources()}
    assert committed == {**{n: "committed" for n in names}, "crash.md": "failed"}


def test_a_late_handler_of_a_broken_pool_leaves_its_replacement_alone() -> None:
    """Every job in flight on a broken pool learns of it, some late: only the first replaces the pool."""

    async def scenario(ex: LocalExecutor) -> list[object]:
        broken = ex._shared_pool()
        ex._retire(broken)  # the first job to learn of the crash
        fresh = ex._shared_pool()  # a new job starts on the replacement
        running = asyncio.ensure_future(ex.map_cpu(pow, 2, 10))
        ex._retire(broken)  # a job of the broken pool that learns of it only now
        assert ex._shared_pool() is fresh and ex.generation == 1
        return [await running, await ex.map_cpu(abs, -3)]

    ex = LocalExecutor(embedder=None, workers=1)  # type: ignore[arg-type]
    try:
        assert asyncio.run(scenario(ex)) == [1024, 3]
    finally:
        ex.close()


# -------------------------------------------------------------------------------- the owner killed


@pytest.mark.timeout(300)
def test_worker_processes_exit_when_fanrag_ingest_is_killed(tmp_path: Path) -> None:
    """SIGKILL ``fanrag ingest`` while its load/chunk workers run: none of its processes may live on
    (workers, and the forkserver and resource tracker that wait for them)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(400):  # enough that the run is still going when its workers exist
        (docs / f"n{i:03d}.md").write_text(f"# Note {i}\n\n" + f"Tide table {i}: the moon lifts the sea. " * 40)
    cmd = [sys.executable, "-m", "fanrag.cli", "ingest", str(docs), "--home", str(tmp_path / "home"), "--quiet",
           "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            descendants = _descendants(proc.pid)
            if len(descendants) >= 4:  # resource tracker, forkserver and workers (the forkserver's children)
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"ingest ended before its workers could be seen: {proc.communicate()[1]}"
        assert len(descendants) >= 3, descendants
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(descendants) == [], "processes of the killed ingest live on"
    finally:
        for p in _alive(descendants):
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


_HOLDS_THE_GIL = '''
import os, re

def hold_the_gil():
    """Catastrophic backtracking inside the C regex engine: the GIL is not released for hours."""
    re.match(r"(a+)+$", "a" * 40 + "b")
'''

_OWNER = '''
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
from hog import hold_the_gil
from fanrag.ingest.executors.local import LocalExecutor

async def main():
    earlier = LocalExecutor(embedder=None, workers=1)  # an earlier run: it starts the forkserver
    await earlier.map_cpu(os.getpid)
    earlier.close()
    executor = LocalExecutor(embedder=None, workers=1)
    print(await executor.map_cpu(os.getpid), flush=True)
    await executor.map_cpu(hold_the_gil)

if __name__ == "__main__":
    asyncio.run(main())
'''


@pytest.mark.timeout(120)
def test_a_worker_holding_the_gil_exits_when_its_owner_is_killed(tmp_path: Path) -> None:
    """The lifeline thread needs the GIL to act on its EOF: a worker stuck in C code (a parser, a regex)
    lived on after a SIGKILL of its owner. The kernel's SIGIO at EOF does not wait for the GIL."""
    (tmp_path / "hog.py").write_text(_HOLDS_THE_GIL)
    (tmp_path / "owner.py").write_text(_OWNER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "owner.py"), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    worker: psutil.Process | None = None
    try:
        assert proc.stdout is not None
        worker = psutil.Process(int(proc.stdout.readline()))
        deadline = time.monotonic() + 30
        while worker.cpu_times().user < 0.5 and time.monotonic() < deadline:  # deep in the regex by now
            time.sleep(0.1)
        forkserver = [p for p in _descendants(proc.pid) if p.pid != worker.pid]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while _alive([worker, *forkserver]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive([worker, *forkserver]) == [], "the worker (or its forkserver) outlived its owner"
    finally:
        for p in _alive([worker] if worker else []):
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_a_read_only_home_fails_in_one_line_naming_it(tmp_path: Path) -> None:
    """A home on a read-only file system: a 37-line traceback from the writer lock (or SIGBUS from a
    store's mapping) became one line naming the home and the reason."""
    home = tmp_path / "home"
    (tmp_path / "a.md").write_text("# A\n\nThe tide tables.\n")
    ok = subprocess.run([sys.executable, "-m", "fanrag.cli", "ingest", str(tmp_path / "a.md"), "--home", str(home),
                         "--quiet"], capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    # A private mount namespace: the home is remounted read-only for this command only.
    script = (f'mount --bind "{home}" "{home}" && mount -o remount,bind,ro "{home}" && '
              f'exec "{sys.executable}" -m fanrag.cli ingest "{tmp_path / "a.md"}" --home "{home}" --quiet')
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f'mount --bind "{home}" "{home}"'], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode(errors='replace').strip()}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {home}: cannot open the index for writing: read-only file system ({home})"], result.stderr
