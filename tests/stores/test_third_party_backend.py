"""A backend written outside fanrag proves itself with the shipped contract suite: it registers with
``register_backend`` (as an object, a plain function, or a lazy "module:attr" string) and runs
``fanrag.testing.stores`` on its own Settings. Two small in-memory stores stand in for a third party's:
blobs in a dict, and brute-force vectors that record their embedder with ``fanrag.stores.identity``."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fanrag.errors import StoreError
from fanrag.settings import Settings
from fanrag.stores import OpenContext, ScoredId, register_backend
from fanrag.stores.base import Allowed
from fanrag.stores.identity import BuiltWith, check_embedder, should_record
from fanrag.testing.stores import BlobStoreContract, VectorStoreContract
from fanrag.types import Chunk

_KEY = re.compile(r"^[0-9a-f]{64}$")
_BLOBS: dict[str, dict[str, bytes]] = {}  # url -> key -> bytes: what a server would hold


class MemoryBlobStore:
    """BlobStore in process memory, one namespace per URL (``memblobs://name``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> MemoryBlobStore:
        return cls(_BLOBS.setdefault(url, {}), read_only=ctx.read_only)

    def __init__(self, blobs: dict[str, bytes], *, read_only: bool = False) -> None:
        self._blobs = blobs
        self.read_only = read_only

    def put(self, data: bytes) -> str:
        if self.read_only:
            raise StoreError("memory blob store opened read-only")
        key = hashlib.sha256(data).hexdigest()
        self._blobs[key] = bytes(data)
        return key

    def put_file(self, path: str) -> str:
        try:
            return self.put(Path(path).read_bytes())
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._blobs[self._checked(key)]
        except KeyError:
            raise StoreError(f"no blob {key}") from None

    def exists(self, key: str) -> bool:
        return self._checked(key) in self._blobs

    def delete(self, key: str) -> None:
        self._blobs.pop(self._checked(key), None)

    @staticmethod
    def _checked(key: str) -> str:
        if not _KEY.match(key):
            raise StoreError(f"invalid blob key {key!r}")
        return key

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Index:
    built: BuiltWith
    shards: int
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # chunk_id -> (doc_id, unit vector)


_VECTORS: dict[str, _Index] = {}  # url -> index


class MemoryVectorStore:
    """VectorStore by brute force in process memory (``memvectors://name``); shard = crc32(chunk_id) % N."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> MemoryVectorStore:
        return cls(url, ctx.dim, ctx.model, shards=ctx.settings.hnsw.shards, read_only=ctx.read_only)

    def __init__(self, url: str, dim: int | None, model: str, *, shards: int, read_only: bool) -> None:
        index = _VECTORS.get(url)
        if index is None:
            if read_only or dim is None:
                raise StoreError(f"{url}: no vector index here yet")
            index = _VECTORS[url] = _Index(BuiltWith(dim, model), shards)
        check_embedder(url, index.built, dim, model, remedy="use another URL")
        if should_record(index.built, model, read_only):
            index.built = BuiltWith(index.built.dim, model)
        self._index = index
        self.read_only = read_only
        self.dim = index.built.dim

    @property
    def n_shards(self) -> int:
        return self._index.shards

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if self.read_only:
            raise StoreError("memory vector store opened read-only")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(chunks), self.dim):
            raise StoreError(f"vectors have shape {vectors.shape}, expected ({len(chunks)}, {self.dim})")
        for chunk, vector in zip(chunks, vectors, strict=True):
            self._index.rows[chunk.chunk_id] = (chunk.doc_id, vector / np.linalg.norm(vector))

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        docs = set(doc_ids)
        gone = [cid for cid, (doc, _) in self._index.rows.items() if doc in docs]
        for cid in gone:
            del self._index.rows[cid]
        return len(gone)

    def search_shard(self, shard: int, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        return self._top(query, k, lambda cid: zlib.crc32(cid.encode()) % self.n_shards == shard, allowed)

    def search(self, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        return self._top(query, k, lambda cid: True, allowed)

    def _top(self, query: np.ndarray, k: int, keep: Any, allowed: Allowed | None) -> list[ScoredId]:
        q = np.asarray(query, dtype=np.float32) / np.linalg.norm(query)
        hits = [ScoredId(cid, float(v @ q)) for cid, (doc, v) in self._index.rows.items()
                if keep(cid) and (allowed is None or doc in allowed)]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def count(self) -> int:
        return len(self._index.rows)

    def flush(self) -> None:
        """Nothing to checkpoint."""

    def close(self) -> None:
        """Nothing to release."""


register_backend("blobs", "memblobs", MemoryBlobStore)
register_backend("blobs", "memblobs-fn", lambda url, ctx: MemoryBlobStore(_BLOBS.setdefault(url, {}),
                                                                          read_only=ctx.read_only))
register_backend("blobs", "memblobs-lazy", f"{__name__}:MemoryBlobStore")
register_backend("vectors", "memvectors", MemoryVectorStore)


def _settings(tmp_path: Path, kind: str, scheme: str) -> Settings:
    return Settings(home=tmp_path).replace(stores={kind: f"{scheme}://{uuid.uuid4().hex}"})


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture(params=["memblobs", "memblobs-fn", "memblobs-lazy"])
    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
        return _settings(tmp_path, "blobs", request.param)

    def test_the_registered_backend_served_it(self, store: Any) -> None:
        assert type(store).__name__ == "MemoryBlobStore"


class TestMemoryVectorStore(VectorStoreContract):
    @pytest.fixture
    def store_settings(self, tmp_path: Path) -> Settings:
        return _settings(tmp_path, "vectors", "memvectors")

    def test_the_registered_backend_served_it(self, store: Any) -> None:
        assert isinstance(store, MemoryVectorStore)


def test_importing_fanrag_does_not_import_pytest() -> None:
    code = ("import sys, fanrag, fanrag.stores, fanrag.stores.factory, fanrag.engine\n"
            "assert 'pytest' not in sys.modules and 'fanrag.testing' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
