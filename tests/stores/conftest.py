"""Store fixtures, parametrised by backend so that server backends join the same contract tests.

A server backend adds its name to ``BACKENDS`` and a branch to each factory (skipping when its
server is not reachable); every test in tests/stores then runs against it too. "postgres" serves the
metadata store (PostgresMetaStore), vectors (PgVectorStore) and keywords (PgKeywordStore) from a throwaway PostgreSQL server
(tests/servers/postgres.py), one empty database per test; the other kinds stay embedded under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.falkordb import falkordb_graph_url, falkordb_server  # noqa: F401 - fixtures
from tests.servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures
from tests.servers.s3 import s3_bucket_url, s3_server  # noqa: F401 - fixtures

BACKENDS = ["embedded", "postgres", "s3", "falkordb"]
_SERVED = {"postgres": {"meta", "vectors", "keywords"}, "s3": {"blobs"}, "falkordb": {"graph"}}  # kinds a server backend provides; "embedded" has them all


def _skip_unless_served(backend: str, kind: str) -> None:
    if backend in _SERVED and kind not in _SERVED[backend]:
        pytest.skip(f"the {backend} backend does not serve the {kind} store")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_vectors(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``open_vectors(dim=16, shards=2, read_only=False, **kw)``: a vector store on one shared location."""
    _skip_unless_served(backend, "vectors")
    opened: list[Any] = []
    dsn = request.getfixturevalue("pg_database") if backend == "postgres" else ""

    def factory(dim: int | None = 16, shards: int = 2, read_only: bool = False, **kw: Any) -> Any:
        kw.setdefault("ef_construction", 100)
        kw.setdefault("ef_search", 64)
        if dsn:
            from fanrag.stores.vectors_pgvector import PgVectorStore

            store: Any = PgVectorStore(dsn, dim, shards=shards, read_only=read_only,
                                       **{k: kw[k] for k in ("m", "ef_construction", "ef_search") if k in kw})
            opened.append(store)
            return store
        from fanrag.stores.vectors_hnsw import ShardedHnswStore

        store = ShardedHnswStore(tmp_path / "vectors", dim, shards=shards, read_only=read_only, **kw)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        if not getattr(store, "_closed", False):
            store.close()


@pytest.fixture
def open_keywords(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    _skip_unless_served(backend, "keywords")
    opened: list[Any] = []
    dsn = request.getfixturevalue("pg_database") if backend == "postgres" else ""

    def factory(read_only: bool = False) -> Any:
        if dsn:
            from fanrag.stores.keywords_postgres import PgKeywordStore

            pg = PgKeywordStore(dsn, read_only=read_only)
            opened.append(pg)
            return pg
        from fanrag.stores.keywords_tantivy import TantivyKeywordStore

        store = TantivyKeywordStore(tmp_path / "bm25", read_only=read_only)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def meta_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    _skip_unless_served(backend, "meta")
    if backend == "postgres":
        from fanrag.stores.meta_postgres import PostgresMetaStore

        store: Any = PostgresMetaStore(request.getfixturevalue("pg_database"))
    else:
        from fanrag.stores.meta_sqlite import SqliteMetaStore

        store = SqliteMetaStore(tmp_path / "meta.sqlite")
    yield store
    store.close()


@pytest.fixture
def blob_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    _skip_unless_served(backend, "blobs")
    if backend == "s3":
        from fanrag.stores.blobs_s3 import S3BlobStore

        store: Any = S3BlobStore(request.getfixturevalue("s3_bucket_url"))
    else:
        from fanrag.stores.blobs_files import FileBlobStore

        store = FileBlobStore(tmp_path / "blobs")
    yield store
    store.close()


@pytest.fixture
def graph_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    _skip_unless_served(backend, "graph")
    if backend == "falkordb":
        from fanrag.stores.graph_falkordb import FalkorGraphStore

        store: Any = FalkorGraphStore(request.getfixturevalue("falkordb_graph_url"))
    else:
        from fanrag.stores.graph_sqlite import SqliteGraphStore

        store = SqliteGraphStore(tmp_path / "graph.sqlite")
    yield store
    store.close()
