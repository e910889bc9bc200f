"""The backend registry (fanrag.stores.factory): lazy entries by kind and URL scheme, third-party
registration, and the extra a backend names when its packages are not installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fanrag.errors import ConfigError, MissingExtraError
from fanrag.registry import Entry
from fanrag.settings import Settings
from fanrag.stores import OpenContext, open_backend, register_backend
from fanrag.stores.factory import BACKENDS, VECTOR_BUFFERS, opener, schemes, wrap_vector_buffer

# Every package an optional store backend imports, hidden at once: each backend must name its own extra.
_OPTIONAL = ("psycopg", "psycopg_pool", "boto3", "botocore", "falkordb", "redis")
_URLS = {"postgresql": "postgresql://u@127.0.0.1:1/db", "postgres": "postgres://u@127.0.0.1:1/db",
         "pgvector": "pgvector://u@127.0.0.1:1/db", "s3": "s3://bucket/prefix", "falkordb": "falkordb://127.0.0.1:1/g"}
_WITH_EXTRAS = [(kind, e) for kind, registry in BACKENDS.items() for e in registry.entries()
                if e.extra and e.target.startswith("fanrag.")]


@pytest.fixture
def without_optional_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _OPTIONAL:
            monkeypatch.delitem(sys.modules, name)
    for name in _OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError


def test_every_kind_has_an_embedded_default_and_the_server_backends() -> None:
    own = {kind: sorted(e.name for e in registry.entries() if e.target.startswith("fanrag."))
           for kind, registry in BACKENDS.items()}  # other tests register third-party schemes too
    assert all(set(own[kind]) <= set(schemes(kind)) for kind in BACKENDS)
    assert own == {
        "meta": ["", "postgres", "postgresql"], "vectors": ["", "pgvector"], "keywords": ["", "postgres", "postgresql"],
        "blobs": ["", "s3"], "graph": ["", "falkordb"]}
    assert sorted(VECTOR_BUFFERS) == ["redis", "rediss", "unix"]
    assert {e.extra for _, e in _WITH_EXTRAS} == {"postgres", "s3", "falkordb"}


@pytest.mark.parametrize(("kind", "entry"), _WITH_EXTRAS, ids=[f"{k}-{e.name}" for k, e in _WITH_EXTRAS])
@pytest.mark.usefixtures("without_optional_packages")
def test_a_backend_without_its_packages_names_its_extra(kind: str, entry: Entry, tmp_path: Path) -> None:
    ctx = OpenContext(settings=Settings(home=tmp_path), read_only=False, dim=8)
    with pytest.raises(MissingExtraError, match=re.escape(f"pip install 'fanrag[{entry.extra}]'")):
        open_backend(kind, _URLS[entry.name], ctx)


@pytest.mark.usefixtures("without_optional_packages")
def test_the_vector_buffer_without_redis_names_its_extra(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path).replace(stores={"vector_buffer": "redis://127.0.0.1:1/0"})
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'fanrag[redis]'")):
        wrap_vector_buffer(settings, inner=None)  # type: ignore[arg-type]


def test_unknown_schemes_kinds_and_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stores\.graph.*'neo4j'"):
        opener("graph", "neo4j://host/db")
    with pytest.raises(ConfigError, match=r"stores\.vector_buffer"):
        wrap_vector_buffer(Settings(home=tmp_path).replace(stores={"vector_buffer": "kafka://h/t"}), inner=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown store kind"):
        register_backend("cache", "x", "pkg.mod:Store")
    with pytest.raises(ValueError, match="module:attr"):
        register_backend("graph", "x", "pkg.mod.Store")


def test_the_last_registration_of_a_scheme_wins(tmp_path: Path) -> None:
    ctx = OpenContext(settings=Settings(home=tmp_path), read_only=True)
    register_backend("graph", "lastwins", lambda url, ctx: ("function", url))
    assert open_backend("graph", "lastwins://g", ctx) == ("function", "lastwins://g")
    register_backend("graph", "lastwins", "fanrag.stores.graph_sqlite:SqliteGraphStore")  # a lazy string now
    assert opener("graph", "lastwins://g").__qualname__ == "SqliteGraphStore.from_url"
    register_backend("graph", "lastwins", lambda url, ctx: ("again", url))
    assert open_backend("graph", "lastwins://g", ctx) == ("again", "lastwins://g")
