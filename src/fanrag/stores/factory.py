"""Which backend serves each store kind: ``open_backend(kind, url, ctx)``, its module imported only then.

A backend is chosen by the store kind and the scheme of its URL in ``settings.stores`` ("" = the
embedded default under ``settings.home``). fanrag's own backends are lazy ``"module:Class"`` entries in
one registry per kind, each naming the extra that installs its packages; every class opens itself the
same way, ``Class.from_url(url, ctx)``. A third party adds a backend with ``register_backend``:

    register_backend("graph", "memgraph", "my_pkg.graph:MemgraphStore", extra="")   # lazy, by name
    register_backend("blobs", "mem", MemoryBlobStore)                               # or the object
    FANRAG_GRAPH=memgraph://host:7687  ->  MemgraphStore.from_url("memgraph://host:7687", ctx)

A target is a class with ``from_url(url, ctx)`` or a plain function ``(url, ctx) -> store``; the last
registration of a (kind, scheme) wins. ``fanrag.testing.stores`` holds the contract tests a backend
should pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..settings import Settings
    from .base import VectorStore

KINDS = ("meta", "vectors", "keywords", "blobs", "graph")
BUFFER_FIELD = "stores.vector_buffer"


@dataclass(frozen=True, slots=True)
class OpenContext:
    """What a backend gets besides its URL."""

    settings: Settings
    read_only: bool
    dim: int | None = None  # vectors only: the embedder's dim (None: a reader takes what the index records)
    model: str = ""  # vectors only: the embedder's name ("" = unknown, not checked against the index)


Opener = Callable[[str, OpenContext], Any]

# One registry per kind, keyed by URL scheme; each entry is a class opened by ``from_url(url, ctx)``.
BACKENDS: dict[str, Registry[Any]] = {kind: Registry(f"stores.{kind}", f"{kind} store") for kind in KINDS}
# Targets registered as objects rather than "module:attr" strings (a third party's, e.g. in a test).
_OBJECTS: dict[tuple[str, str], Any] = {}


def _add(kind: str, schemes: Iterable[str], target: str, extra: str = "") -> None:
    for scheme in schemes:
        BACKENDS[kind].add(scheme, target, extra=extra)


_add("meta", [""], "fanrag.stores.meta_sqlite:SqliteMetaStore")
_add("meta", ["postgresql", "postgres"], "fanrag.stores.meta_postgres:PostgresMetaStore", "postgres")
_add("vectors", [""], "fanrag.stores.vectors_hnsw:ShardedHnswStore")
_add("vectors", ["pgvector"], "fanrag.stores.vectors_pgvector:PgVectorStore", "postgres")
_add("keywords", [""], "fanrag.stores.keywords_tantivy:TantivyKeywordStore")
_add("keywords", ["postgresql", "postgres"], "fanrag.stores.keywords_postgres:PgKeywordStore", "postgres")
_add("blobs", [""], "fanrag.stores.blobs_files:FileBlobStore")
_add("blobs", ["s3"], "fanrag.stores.blobs_s3:S3BlobStore", "s3")
_add("graph", [""], "fanrag.stores.graph_sqlite:SqliteGraphStore")
_add("graph", ["falkordb"], "fanrag.stores.graph_falkordb:FalkorGraphStore", "falkordb")

# The vector write buffer, by the scheme of ``stores.vector_buffer``: ``Class.wrap(inner, url, default_key)``.
VECTOR_BUFFERS: Registry[Any] = Registry(BUFFER_FIELD, "vector write buffer")
for _scheme in ("redis", "rediss", "unix"):
    VECTOR_BUFFERS.add(_scheme, "fanrag.stores.buffer:BufferedVectorStore", extra="redis")


def _registry(kind: str) -> Registry[Any]:
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown store kind {kind!r}; known: {KINDS}") from None


def register_backend(kind: str, scheme: str, target: str | Opener | type, *, extra: str = "") -> None:
    """Serve store ``kind`` for URLs with this scheme ("" = the embedded default). ``target``: a
    ``"module:attr"`` string (imported on first use; ``extra`` names what installs it) or the class or
    function itself."""
    registry = _registry(kind)
    if isinstance(target, str):
        registry.add(scheme, target, extra=extra)
        _OBJECTS.pop((kind, scheme), None)
    else:
        _OBJECTS[(kind, scheme)] = target


def schemes(kind: str) -> list[str]:
    """The URL schemes a backend serves for ``kind`` ("" = embedded)."""
    return sorted({*_registry(kind), *(s for k, s in _OBJECTS if k == kind)})


def opener(kind: str, url: str) -> Opener:
    """How to open the store ``url`` names (its module imported now); ConfigError naming ``stores.<kind>``
    when no backend serves the URL's scheme, MissingExtraError naming the extra when its package is absent."""
    scheme = urlsplit(url).scheme if url else ""
    target = _OBJECTS.get((kind, scheme))
    if target is None:
        registry = _registry(kind)
        if scheme not in registry:
            known = [s or "(empty: embedded)" for s in schemes(kind)]
            raise ConfigError(f"stores.{kind}", f"no backend for URL scheme {scheme!r}; known: {known}")
        target = registry.load(scheme)
    return getattr(target, "from_url", target)


def open_backend(kind: str, url: str, ctx: OpenContext) -> Any:
    """The store of ``kind`` at ``url``, opened as ``ctx`` says."""
    return opener(kind, url)(url, ctx)


def wrap_vector_buffer(settings: Settings, inner: VectorStore) -> VectorStore:
    """``inner`` behind the write buffer ``settings.stores.vector_buffer`` names."""
    url = settings.stores.vector_buffer
    scheme = urlsplit(url).scheme
    if scheme not in VECTOR_BUFFERS:
        raise ConfigError(BUFFER_FIELD, f"{url!r}: need a redis:// URL")
    # Without ?key=, one stream per vector store: two indexes sharing a Redis never mix their writes.
    target = settings.stores.vectors or str(settings.home.resolve())
    default_key = "fanrag:vbuf:" + hashlib.sha1(target.encode()).hexdigest()[:16]
    return VECTOR_BUFFERS.load(scheme).wrap(inner, url, default_key)  # type: ignore[no-any-return]
