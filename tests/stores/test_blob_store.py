"""BlobStore contract (every backend): content addressing, idempotence, streaming files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fanrag.errors import StoreError
from fanrag.stores.base import BlobStore


def test_is_a_blob_store(blob_store) -> None:
    assert isinstance(blob_store, BlobStore)


def test_put_get_is_content_addressed_and_idempotent(blob_store) -> None:
    key = blob_store.put(b"some bytes")
    assert key == hashlib.sha256(b"some bytes").hexdigest()
    assert blob_store.put(b"some bytes") == key
    assert blob_store.get(key) == b"some bytes"
    assert blob_store.exists(key)
    blob_store.delete(key)
    blob_store.delete(key)  # absent: no error
    assert not blob_store.exists(key)
    with pytest.raises(StoreError, match="no blob"):
        blob_store.get(key)


def test_put_file_streams_large_files(blob_store, tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 17)  # ~5 MB: several read pieces
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    key = blob_store.put_file(str(src))
    assert key == hashlib.sha256(data).hexdigest() == blob_store.put(data)
    assert blob_store.get(key) == data


def test_invalid_keys_and_missing_files_raise_store_error(blob_store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid blob key"):
        blob_store.get("../../etc/passwd")
    with pytest.raises(StoreError):
        blob_store.put_file(str(tmp_path / "missing"))


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    from fanrag.stores.blobs_files import FileBlobStore

    store = FileBlobStore(tmp_path / "b")
    store.put(b"x")
    (tmp_path / "b" / ".stale.tmp").write_bytes(b"partial")  # a crash mid-write
    FileBlobStore(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").rglob("*") if p.is_file()) == \
        [hashlib.sha256(b"x").hexdigest()[2:]]
