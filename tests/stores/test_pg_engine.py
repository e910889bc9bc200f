"""End to end on PostgreSQL: Engine.ingest with meta in PostgreSQL and vectors in pgvector, a query
over it, and a server outage in the middle of an ingest that loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.settings import Settings
from tests.conftest import make_settings

TOPICS = {
    "alpha": "Alpha particles are helium nuclei and are stopped by a sheet of paper.",
    "beta": "Beta decay emits an electron or a positron; Geiger counters detect it.",
    "gamma": "Gamma rays are high-energy photons that pass through thick walls.",
    "neutrino": "Neutrinos oscillate between flavours as they travel through matter.",
    "quark": "Quarks combine into protons and neutrons, held by the strong force.",
    "muon": "Muons are heavy cousins of electrons created by cosmic rays in the atmosphere.",
}


def write_corpus(root: Path, copies: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in TOPICS.items():
        for i in range(copies):
            (root / f"{name}-{i}.txt").write_text(f"{text} Note {i}.\n", encoding="utf-8")
    return root


def settings_for(dsn: str, home: Path, **pipeline: Any) -> Any:
    return make_settings(home, stores={"meta": dsn, "vectors": "pgvector" + dsn.removeprefix("postgresql")},
                         pipeline=pipeline)


def counts(engine: Engine) -> dict[str, int]:
    meta = engine.stores.meta
    return {"committed_chunks": sum(d.n_chunks for d in meta.documents(status="committed")),
            "vectors": engine.stores.vectors.count(), "keywords": engine.stores.keywords.count()}


def test_ingest_and_query_on_postgres_chosen_by_environment(pg_database: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    env = {"FANRAG_META": pg_database, "FANRAG_VECTORS": "pgvector" + pg_database.removeprefix("postgresql")}
    settings = Settings.load(home=tmp_path / "home", overrides={"pipeline": {"workers": 2}}, env=env)
    with Engine.open(settings=settings) as engine:
        assert type(engine.stores.meta).__name__ == "PostgresMetaStore"
        assert type(engine.stores.vectors).__name__ == "PgVectorStore"
        summary = engine.ingest([corpus])
        assert summary.failed == [] and summary.ok == len(TOPICS)
        inv = counts(engine)
        assert inv["committed_chunks"] == inv["vectors"] == inv["keywords"] >= len(TOPICS)
        result = asyncio.run(engine.retriever.aretrieve("what stops helium nuclei?", branches=["dense"]))
        assert result.hits and "helium" in result.hits[0].text
        again = engine.ingest([corpus])
        assert (again.ok, again.unchanged) == (0, len(TOPICS))
        assert counts(engine) == inv


class _OutageOnce:
    """Wraps a method of the vector store: on its ``nth`` call, stops PostgreSQL (immediate: every
    connection drops) and starts it again from another thread a second later, then makes the call."""

    def __init__(self, store: Any, method: str, server: Any, nth: int) -> None:
        self._server, self._nth = server, nth
        self._real = getattr(store, method)
        setattr(store, method, self)
        self.calls = 0
        self.restarter: threading.Timer | None = None

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self._nth:
            self._server.stop("immediate")
            self.restarter = threading.Timer(1.0, self._server.start)
            self.restarter.start()
        return self._real(*args)


# "add": the outage falls between two transactions; the pool waits for the server and reconnects.
# "_upsert": it falls inside add's open transaction (after the first shard's rows); the transaction
# is lost and run again on a fresh connection once the server is back (and, were that to fail too,
# the pipeline's batch retry would write the whole batch again).
@pytest.mark.parametrize("method", ["add", "_upsert"])
def test_a_server_restart_mid_ingest_loses_and_duplicates_nothing(pg_server, pg_database: str, tmp_path: Path,
                                                                  method: str) -> None:
    corpus = write_corpus(tmp_path / "corpus", copies=4)
    n_docs = len(TOPICS) * 4
    with Engine.open(settings=settings_for(pg_database, tmp_path / "home", write_batch=4)) as engine:
        outage = _OutageOnce(engine.stores.vectors, method, pg_server, nth=2)
        try:
            summary = engine.ingest([corpus])
        finally:
            if outage.restarter is not None:
                outage.restarter.join()
        assert outage.restarter is not None, "the ingest wrote too few batches to meet the outage"
        assert summary.failed == [] and summary.ok == n_docs
        inv = counts(engine)
        assert inv["committed_chunks"] == inv["vectors"] == inv["keywords"] == n_docs  # one chunk each
        assert len(engine.stores.meta.documents(status="committed")) == n_docs
        assert engine.stores.meta.documents(status="pending") == []
        again = engine.ingest([corpus])
        assert (again.ok, again.unchanged) == (0, n_docs)
        assert counts(engine) == inv


@pytest.fixture(autouse=True)
def _server_running(pg_server) -> Iterator[None]:
    """A test that stopped the server must not leave it stopped for the next one."""
    yield
    import psycopg

    try:
        psycopg.connect(pg_server.dsn(), connect_timeout=2).close()
    except psycopg.OperationalError:
        pg_server.start()


def test_query_an_all_server_index_from_a_machine_without_its_home(pg_database: str, s3_bucket_url: str,
                                                                     falkordb_graph_url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Every store is a server, so a reader on another machine has no home directory: `fanrag query` must
    # answer (it failed with "no index here"), and reading must not create the directory either.
    from click.testing import CliRunner

    from fanrag.cli import cli

    urls = {"FANRAG_META": pg_database, "FANRAG_KEYWORDS": pg_database,
            "FANRAG_VECTORS": "pgvector" + pg_database.removeprefix("postgresql"),
            "FANRAG_BLOBS": s3_bucket_url, "FANRAG_GRAPH": falkordb_graph_url}
    writer = Settings.load(home=tmp_path / "writer", overrides={"pipeline": {"workers": 1}}, env=urls)
    with Engine.open(settings=writer) as engine:
        assert engine.ingest([write_corpus(tmp_path / "corpus")]).ok == len(TOPICS)
    for name, value in urls.items():
        monkeypatch.setenv(name, value)
    absent = tmp_path / "not-here"
    result = CliRunner().invoke(cli, ["query", "what stops helium nuclei?", "--home", str(absent), "--json"])
    assert result.exit_code == 0, result.output
    assert "helium" in result.output and not absent.exists()
