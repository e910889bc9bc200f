"""Helpers every loader shares: reading a file with errors that name it, hashing, strict UTF-8."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from ...errors import EmptyDocument, LoadError, UnsupportedFormat

_BLOCK = 1 << 20


@contextmanager
def os_errors(path: Path) -> Iterator[None]:
    """Turn the OS errors of reading ``path`` into LoadErrors with a one-line reason."""
    try:
        yield
    except FileNotFoundError as exc:
        # Listed by the walker, gone by the time a worker reads it (deleted or renamed meanwhile).
        raise LoadError(str(path), "file vanished (deleted or moved after it was listed)") from exc
    except IsADirectoryError as exc:
        raise UnsupportedFormat(str(path), "is a directory, not a file") from exc
    except PermissionError as exc:
        raise LoadError(str(path), "permission denied") from exc


def read_bytes(path: Path) -> bytes:
    with os_errors(path):
        return path.read_bytes()


def read_head(path: Path, n: int = 8192) -> bytes:
    with os_errors(path), open(path, "rb") as f:
        return f.read(n)


def hash_file(path: Path) -> str:
    """Same digest as ``fanrag.ids.content_hash(path.read_bytes())``, without holding the file in memory.

    Cached per process on (path, size, mtime): every page range of a split PDF carries the whole file's
    hash, and a worker that loads 70 ranges of a 30 MB manual should hash it once, not 70 times.
    """
    with os_errors(path):
        st = path.stat()
    return _hash_file(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with os_errors(Path(path)), open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def decode_utf8(path: Path, data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is dropped), newlines normalised to ``\\n``.

    Invalid bytes are refused rather than replaced: a silently mangled document is worse than a clear
    error, and guessing a legacy encoding is wrong often enough to be worse still.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedFormat(
            str(path),
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "other encodings are refused rather than guessed: convert the file to UTF-8",
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path) -> str:
    """The file as text; EmptyDocument when there is nothing but whitespace."""
    text = decode_utf8(path, read_bytes(path))
    require_text(path, text)
    return text


def require_text(path: Path, text: str, reason: str = "empty (no text, or whitespace only)") -> None:
    if not text.strip():
        raise EmptyDocument(str(path), reason)
