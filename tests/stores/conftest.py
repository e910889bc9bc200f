"""Store fixtures, parametrised by backend so that fanrag's server backends run the shipped contract suite
(``fanrag.testing.stores``) beside the embedded ones.

``backend`` names a set of servers; ``store_settings`` gives the Settings of one test's fresh location
for the contract class asking (its ``kind``), skipping a backend that does not serve that kind.
"postgres" serves the metadata store, vectors (pgvector) and keywords from a throwaway PostgreSQL server
(tests/servers/postgres.py), one empty database per test; "s3" serves blobs (moto), "falkordb" the
graph; "embedded" serves every kind under ``tmp_path``. A new server backend adds its name to
``BACKENDS``, its kinds to ``_SERVED`` and its URLs to ``_server_urls``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Before fanrag.testing is imported: pytest then rewrites the shipped suite's asserts into detailed messages.
pytest.register_assert_rewrite("fanrag.testing")

from fanrag.settings import Settings
from fanrag.testing.stores import StoreOpener, VectorStoreContract
from tests.servers.falkordb import falkordb_graph_url, falkordb_server  # noqa: F401 - fixtures
from tests.servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures
from tests.servers.s3 import s3_bucket_url, s3_server  # noqa: F401 - fixtures

BACKENDS = ["embedded", "postgres", "s3", "falkordb"]
_SERVED = {"postgres": {"meta", "vectors", "keywords"}, "s3": {"blobs"}, "falkordb": {"graph"}}


def _server_urls(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "postgres":
        dsn = request.getfixturevalue("pg_database")
        return {"meta": dsn, "keywords": dsn, "vectors": "pgvector" + dsn.removeprefix("postgresql")}
    if backend == "s3":
        return {"blobs": request.getfixturevalue("s3_bucket_url")}
    if backend == "falkordb":
        return {"graph": request.getfixturevalue("falkordb_graph_url")}
    return {}


def settings_for(backend: str, kind: str, home: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings whose ``stores.<kind>`` is served by ``backend`` (skips if it serves no such store)."""
    if backend in _SERVED and kind not in _SERVED[backend]:
        pytest.skip(f"the {backend} backend does not serve the {kind} store")
    return Settings(home=home).replace(stores=_server_urls(backend, request))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """For a contract class of ``fanrag.testing.stores``: its kind on ``backend``."""
    return settings_for(backend, request.cls.kind, tmp_path, request)


@pytest.fixture
def open_vectors(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreOpener]:
    """A vector store opener (as the contract suite's) for tests outside a contract class."""
    settings = settings_for(backend, "vectors", tmp_path, request)
    with StoreOpener(settings, "vectors", **VectorStoreContract.defaults) as opener:
        yield opener


@pytest.fixture
def open_keywords(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreOpener]:
    with StoreOpener(settings_for(backend, "keywords", tmp_path, request), "keywords") as opener:
        yield opener
