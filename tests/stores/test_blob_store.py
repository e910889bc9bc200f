"""The shipped BlobStore contract on every backend (files, S3), and the file store's own temp-file cleanup."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fanrag.testing.stores import BlobStoreContract


class TestBlobStoreContract(BlobStoreContract):
    """Run against the file store and S3 (see conftest.py)."""


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    from fanrag.stores.blobs_files import FileBlobStore

    store = FileBlobStore(tmp_path / "b")
    store.put(b"x")
    (tmp_path / "b" / ".stale.tmp").write_bytes(b"partial")  # a crash mid-write
    FileBlobStore(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").rglob("*") if p.is_file()) == \
        [hashlib.sha256(b"x").hexdigest()[2:]]
