"""A file that vanishes between its reading and its write fails alone (issue 13, finding 4), and what a
crashed run left pending is swept from every store by the next run, so that every store holds exactly
the committed chunks again (counted in each: metadata, vectors, keywords, graph)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.ingest.sources import PathSource
from fanrag.ingest.work import process_part
from fanrag.types import Document

from ..conftest import make_settings
from ..servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures
from .inline import InlineExecutor, run_inline

TEXT = "Captain Ahab sailed from Nantucket with Starbuck and Queequeg to hunt the whale. " * 12


def inventory(engine: Engine, home: Path) -> dict[str, Any]:
    """Chunks per store, and whether every graph entry belongs to a committed chunk."""
    meta = engine.stores.meta
    committed = meta.documents(status="committed")
    chunk_ids = set(meta.chunk_ids_of([d.doc_id for d in committed]))
    with sqlite3.connect(home / "graph.sqlite") as conn:
        graph = {r[0] for r in conn.execute("SELECT DISTINCT chunk_id FROM mentions")}
    return {"meta": sum(d.n_chunks for d in committed), "vectors": engine.stores.vectors.count(),
            "keywords": engine.stores.keywords.count(), "graph_orphans": len(graph - chunk_ids),
            "graph": len(graph), "pending": len(meta.documents(status="pending"))}


def assert_consistent(engine: Engine, home: Path) -> dict[str, Any]:
    inv = inventory(engine, home)
    assert inv["meta"] == inv["vectors"] == inv["keywords"] and inv["graph_orphans"] == inv["pending"] == 0, inv
    return inv


def _docs(root: Path, names: list[str]) -> Path:
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name).write_text(f"{name.split('.')[0].capitalize()} log. {TEXT}")
    return root


@pytest.mark.parametrize("becomes", ["deleted", "a FIFO"])
def test_a_file_that_vanishes_after_it_was_read_fails_alone(becomes: str, tmp_path: Path) -> None:
    """It raised StoreError from the blob write: the run aborted and left its batch pending forever."""
    docs = _docs(tmp_path / "docs", ["keep.txt", "vanish.txt", "other.txt"])
    vanish = docs / "vanish.txt"

    def then_vanish(fn: Any, args: tuple[Any, ...]) -> Any:
        result = fn(*args)
        if fn is process_part and args[0].plan.source.path == str(vanish):
            vanish.unlink()
            if becomes == "a FIFO":
                os.mkfifo(vanish)  # opening it to store the original would block the writer forever
        return result

    home = tmp_path / "home"
    with Engine.open(settings=make_settings(home)) as engine:
        summary = run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder, then_vanish))
        assert summary.ok == 2
        [(path, reason)] = summary.failed
        assert path == str(vanish) and reason.endswith("after it was read; nothing of it was written"), reason
        assert "\n" not in reason
        assert {s.uri.rsplit("/", 1)[1]: s.status for s in engine.stores.meta.sources()} == {
            "keep.txt": "committed", "other.txt": "committed", "vanish.txt": "failed"}
        assert_consistent(engine, home)


class _Crash(BaseException):
    """What a SIGKILL does to a run between its store writes and its commit."""


@pytest.mark.timeout(300)
def test_what_a_crashed_run_left_pending_is_swept_from_every_store(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch written to vectors, keywords and graph but never committed: its rows stayed pending and its
    index entries stayed (meta != vectors != keywords), for good once its file was gone."""
    docs = _docs(tmp_path / "docs", ["kept.txt", "changed.txt"])
    home = tmp_path / "home"
    with Engine.open(settings=make_settings(home)) as engine:
        assert run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder)).ok == 2
        before = assert_consistent(engine, home)
        (docs / "changed.txt").write_text(f"Changed log. Ishmael joined the Pequod in New Bedford. {TEXT}")
        _docs(docs, ["crashed.txt"])

        def crash(*_: Any) -> None:
            raise _Crash

        with monkeypatch.context() as m:
            m.setattr(engine.stores.meta, "commit", crash)
            with pytest.raises(BaseExceptionGroup) as crashed:
                run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder))
            assert crashed.value.subgroup(_Crash) is not None
        left = inventory(engine, home)
        # one batch or two reached the stores before the crash, as the pipeline happened to batch the two files
        assert left["pending"] in (1, 2) and left["vectors"] > left["meta"] and left["graph_orphans"] > 0, left
        (docs / "crashed.txt").unlink()  # its file is gone: no run would ever redo it

        summary = run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder), prune=True)
        assert (summary.swept, summary.ok, summary.unchanged, summary.failed) == (left["pending"], 1, 1, [])
        after = assert_consistent(engine, home)
        assert after["meta"] > 0 and after["graph"] >= before["graph"] > 0
        assert engine.stores.keywords.search("Ishmael Pequod", 5)  # the changed file, read again and committed
        assert not engine.stores.keywords.search("crashed", 5)


# ------------------------------------------------------------------------------------------ PostgreSQL

def _doc(doc_id: str) -> Document:
    return Document(doc_id=doc_id, uri=f"file:///x/{doc_id}", source=f"file:///x/{doc_id}", content_hash="h",
                    text="t")


def test_postgres_sweeps_only_what_writers_that_are_gone_left_pending(request: pytest.FixtureRequest) -> None:
    """Several writers share one database: a live writer's batch in flight is never swept; a writer that
    is gone (its claim released, as by a crash), and this writer's own leftovers are."""
    from fanrag.stores.meta_postgres import PostgresMetaStore

    dsn = request.getfixturevalue("pg_database")

    a, b = PostgresMetaStore(dsn, stale_after_s=0), PostgresMetaStore(dsn, stale_after_s=0)
    young = PostgresMetaStore(dsn)  # the default grace: rows this young may be a live batch
    try:
        a.mark_pending([_doc("d-a")])
        b.mark_pending([_doc("d-b")])
        assert b.stale_pending() == ["d-b"]
        a.close()  # its session ends: as when its process is killed
        assert sorted(b.stale_pending()) == ["d-a", "d-b"]
        assert young.stale_pending() == []
        b.commit([_doc("d-b")], [], {})
        assert b.stale_pending() == ["d-a"]
    finally:
        b.close()
        young.close()
