"""Content-addressed files: ``blobs/ab/cdef...`` where ``abcdef...`` is the sha256 of the bytes.

Writes go to a temporary file in the same directory, are fsynced, then renamed into place, so a reader
never sees a partial blob and a crash leaves at most a stray ``.tmp`` file (cleaned up on open).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Self

from ..errors import StoreError

if TYPE_CHECKING:
    from .factory import OpenContext

_CHUNK = 1 << 20  # put_file streams in 1 MiB pieces: a 500 MB PDF never sits in memory whole
_KEY = re.compile(r"^[0-9a-f]{64}$")


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """BlobStore on a directory (``home/blobs``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """The embedded default: ``home/blobs/``, opened by ``open_stores``."""
        return cls(ctx.settings.home / "blobs", read_only=ctx.read_only)

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.root = Path(path)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            for stray in self.root.glob(".*.tmp"):  # temp files live in the root (see _write_tmp)
                stray.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise StoreError(f"invalid blob key {key!r}: expected 64 hex digits (sha256)")
        return self.root / key[:2] / key[2:]

    def _write_tmp(self, pieces: Iterator[bytes]) -> tuple[str, Path]:
        """Stream pieces into a temporary file, hashing as we go; returns (key, temp path)."""
        if self.read_only:
            raise StoreError(f"{self.root}: blob store opened read-only")
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    digest.update(piece)
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), Path(tmp)

    def _install(self, key: str, tmp: Path) -> str:
        dest = self._path(key)
        if dest.exists():  # same bytes already stored: idempotent
            tmp.unlink(missing_ok=True)
            return key
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        if self.exists(key):
            return key
        try:
            _, tmp = self._write_tmp(iter((data,)))
            return self._install(key, tmp)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot store blob: {exc}") from exc

    def put_file(self, path: str) -> str:
        try:
            with open(path, "rb") as src:
                key, tmp = self._write_tmp(iter(lambda: src.read(_CHUNK), b""))
            return self._install(key, tmp)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot store {path}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no blob {key}") from None
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot read blob {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.root}: blob store opened read-only")
        self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing is held open between calls."""

