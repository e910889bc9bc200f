"""``IngestMonitor`` in-process: the counters a run's progress events build, the names it shows, and how
readers are woken."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fanrag.server.files import SourceView
from fanrag.server.ingest_events import IngestMonitor
from fanrag.server.sse import frame
from fanrag.settings import Settings


@pytest.fixture
def monitor(tmp_path: Path) -> IngestMonitor:
    root = tmp_path / "docs"
    root.mkdir()
    settings = Settings(home=tmp_path / "home").replace(server={"ingest_root": str(root)})
    return IngestMonitor(SourceView(settings))


def test_a_run_counts_what_is_in_each_stage(monitor: IngestMonitor, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    with monitor.run("reports/") as progress:
        assert monitor.snapshot()["runs"][0]["status"] == "waiting"
        progress.start()
        progress.planned(3)
        progress.part_done(pages=4, failed=0)
        progress.embedding(docs=1, chunks=10, queued=2)
        state = monitor.snapshot()["runs"][0]
        assert state["stages"] == {"load_chunk": 2, "queued": 2, "embedding": 10, "writing": 0,
                                        "committed": 0, "unchanged": 0, "failed": 0}
        progress.embedded(docs=1, chunks=10, seconds=0.5)
        progress.committed(docs=1, chunks=6)
        progress.failed(str(root / "bad.pdf"), f"cannot parse {root}/bad.pdf")
        progress.failed("/elsewhere/caf\udce9.txt", "not UTF-8")
        state = monitor.snapshot()["runs"][0]
        assert state["stages"]["writing"] == 4 and state["stages"]["failed"] == 2
        assert state["batches"] == [{"docs": 1, "chunks": 10, "seconds": 0.5, "chunks_per_s": 20.0}]
        assert state["embed"] == {"seconds": 0.5, "chunks_per_s": 20.0}
        assert state["failures"][0] == {"source": "bad.pdf", "reason": "cannot parse bad.pdf"}  # no root
        progress.finish({"ok": 1, "failed": [{"source": str(root / "bad.pdf"), "reason": "x"}], "missing_paths": []})
    state = monitor.snapshot()["runs"][0]
    assert state["status"] == "done" and state["summary"]["failed"] == [{"source": "bad.pdf", "reason": "x"}]
    assert all(v == 0 for k, v in state["stages"].items() if k in ("load_chunk", "queued", "embedding", "writing"))
    # a file name that is not UTF-8 is sent escaped, never as a broken frame
    assert b"caf\\\\xe9.txt" in frame("state", monitor.snapshot())


def test_an_exception_fails_the_run_with_one_line(monitor: IngestMonitor, tmp_path: Path) -> None:
    with pytest.raises(OSError), monitor.run("x") as progress:
        progress.start()
        raise OSError(f"disk full under {tmp_path / 'docs'}/a\nsecond line")
    state = monitor.snapshot()["runs"][0]
    assert state["status"] == "failed" and state["error"] == "OSError: disk full under a"


def test_readers_get_the_state_then_each_change_coalesced(monitor: IngestMonitor) -> None:
    async def read() -> list[Any]:
        states = monitor.states(every_s=0.05, keepalive_s=0.2)
        got = [await anext(states)]
        with monitor.run("a") as progress:
            progress.start()
            for _ in range(50):  # a burst: one state, not fifty
                progress.planned(1)
            got.append(await anext(states))
            got.append(await anext(states))  # nothing changes: a keep-alive
        await states.aclose()
        return got

    first, burst, idle = asyncio.run(asyncio.wait_for(read(), 10))
    assert first == {"runs": []}
    assert burst["runs"][0]["parts"]["planned"] == 50
    assert idle is None
