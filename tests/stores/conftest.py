"""Store fixtures, parametrised by backend so that server backends join the same contract tests.

A server backend adds its name to ``BACKENDS`` and a branch to each factory (skipping when its
server is not reachable); every test in tests/stores then runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["embedded"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_vectors(backend: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``open_vectors(dim=16, shards=2, read_only=False, **kw)``: a vector store on one shared location."""
    opened: list[Any] = []

    def factory(dim: int | None = 16, shards: int = 2, read_only: bool = False, **kw: Any) -> Any:
        from fanrag.stores.hnsw import ShardedHnswStore

        kw.setdefault("ef_construction", 100)
        kw.setdefault("ef_search", 64)
        store = ShardedHnswStore(tmp_path / "vectors", dim, shards=shards, read_only=read_only, **kw)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        if not getattr(store, "_closed", False):
            store.close()


@pytest.fixture
def open_keywords(backend: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    opened: list[Any] = []

    def factory(read_only: bool = False) -> Any:
        from fanrag.stores.bm25 import TantivyKeywordStore

        store = TantivyKeywordStore(tmp_path / "bm25", read_only=read_only)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def meta_store(backend: str, tmp_path: Path) -> Iterator[Any]:
    from fanrag.stores.sqlite_meta import SqliteMetaStore

    store = SqliteMetaStore(tmp_path / "meta.sqlite")
    yield store
    store.close()


@pytest.fixture
def blob_store(backend: str, tmp_path: Path) -> Iterator[Any]:
    from fanrag.stores.blobs import FileBlobStore

    store = FileBlobStore(tmp_path / "blobs")
    yield store
    store.close()


@pytest.fixture
def graph_store(backend: str, tmp_path: Path) -> Iterator[Any]:
    from fanrag.stores.graph_sqlite import SqliteGraphStore

    store = SqliteGraphStore(tmp_path / "graph.sqlite")
    yield store
    store.close()
