"""Files the server reads, and how it names them to its clients.

Two ways in, one rule (``PathSource`` with a root): every file ingested resolves, symlinks followed,
inside the directory the request may reach.

    JSON {"paths": [...]}   paths under ``server.ingest_root``; each is checked as a name (no NUL, a
                            file name's bytes, components of at most 255 bytes: else 422), resolved and
                            refused with 403 if it lies outside the root, and deduplicated, all before
                            the write lock is taken. Files met in the walk that resolve outside the root
                            (a symlink to /etc/passwd in a subdirectory) fail by name in the summary.
    multipart upload        each file is stored under ``home/uploads/<content hash>/<name>`` (a name is
                            its last path component; NUL, ``.``/``..``, over 255 bytes: 400), written to a
                            temporary file of its own and renamed into place, so identical uploads at once
                            each see a whole file; the same content keeps the same path (the same document
                            id, "unchanged" next time). The upload directory is the root of that ingest.

``SourceView`` is how the read API names a source: relative to the ingest root, ``uploads/...`` for an
upload, the bare file name for anything else; never an absolute server path.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import HTTPException, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..errors import FanragError
from ..filters import parse_tags
from ..ingest.sources import PathSource
from ..settings import Settings
from .http import parse_json

UPLOADS = "uploads"
NAME_MAX = 255  # bytes in one path component (Linux, macOS, the common file systems)
PATH_MAX = 4096


def file_name_bytes(name: str) -> bytes:
    """The bytes of a path as the OS gets them, or ValueError saying in one line why it has none."""
    if "\0" in name:
        raise ValueError("a file name cannot hold a NUL byte")
    try:
        data = os.fsencode(name)
    except UnicodeEncodeError:
        raise ValueError("not a file name: it holds a lone surrogate that encodes to no bytes") from None
    if any(len(part) > NAME_MAX for part in data.split(b"/")):
        raise ValueError(f"a path component is longer than {NAME_MAX} bytes")
    return data


def _valid_path(raw: str) -> str:
    file_name_bytes(raw)
    return raw


class IngestPaths(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[Annotated[str, Field(max_length=PATH_MAX), AfterValidator(_valid_path)]] = Field(
        min_length=1, max_length=10_000,
        description="Paths relative to server.ingest_root (or absolute, inside it); \"\" is the root itself")


def confined_paths(req: IngestPaths, settings: Settings) -> PathSource:
    """The source of a JSON ingest: each path resolved against the root, refused (403) outside it,
    deduplicated (``[""] * 50`` walks the root once). Nothing is read yet."""
    if not settings.server.ingest_root:
        raise HTTPException(403, "ingesting server-side paths is disabled: set server.ingest_root")
    root = Path(os.path.realpath(settings.server.ingest_root))
    unique: dict[Path, None] = {}
    for raw in req.paths:
        real = Path(os.path.realpath(root / raw))  # an absolute raw replaces root; symlinks and .. resolve
        if not real.is_relative_to(root):
            raise HTTPException(403, f"{raw!r} is outside server.ingest_root")
        unique[real] = None
    return PathSource(unique, root=root, exclude=[settings.home])


async def save_uploads(request: Request, settings: Settings) -> tuple[PathSource, dict[str, Any]]:
    """Store each uploaded file under ``home/uploads/<content hash>/<name>``; the source of their ingest,
    and the ``metadata`` form field (a JSON object of tags: ``filters.parse_tags``), checked first."""
    limit = settings.server.max_upload_mb << 20
    uploads = settings.home / UPLOADS
    form = await request.form(max_part_size=limit, max_files=1000)
    try:
        tags = upload_tags(form.get("metadata"))
        saved: dict[Path, None] = {}
        for _key, value in form.multi_items():
            if isinstance(value, str):
                continue
            name = upload_name(value.filename or "")
            data = await value.read()
            dest = uploads / hashlib.blake2b(data, digest_size=8).hexdigest() / name
            await asyncio.to_thread(_write_once, dest, data)
            saved[dest] = None
    finally:
        await form.close()
    if not saved:
        raise HTTPException(422, "no files in the upload")
    return PathSource(saved, root=uploads), tags


def upload_tags(field: object) -> dict[str, Any]:
    """The upload's ``metadata`` field as tags ({} without one), or HTTPException(400) naming what is wrong."""
    if field is None or field == "":
        return {}
    if not isinstance(field, str):
        raise HTTPException(400, "metadata: a form field holding a JSON object, not a file")
    try:
        return parse_tags(parse_json(field.encode()))
    except FanragError as exc:
        raise HTTPException(400, f"metadata: {exc}") from None


def upload_name(filename: str) -> str:
    """The last component of an uploaded file's name (either slash), or HTTPException(400) why not."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise HTTPException(400, "every uploaded file needs a file name")
    try:
        file_name_bytes(name)
    except ValueError as exc:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise HTTPException(400, f"uploaded file name {shown!r}: {exc}") from None
    return name


def _write_once(dest: Path, data: bytes) -> None:
    """Write ``dest`` whole or not at all. The path holds its content's hash, so a file already there is
    this one; each writer has its own temporary file, and the rename is atomic."""
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SourceView:
    """How the read API names a source (a file URI or path): never an absolute server path."""

    def __init__(self, settings: Settings) -> None:
        root = settings.server.ingest_root
        self._roots = [(Path(os.path.realpath(settings.home / UPLOADS)), UPLOADS)]
        if root:
            self._roots.append((Path(os.path.realpath(root)), ""))

    def name(self, source: str) -> str:
        """``source`` relative to the ingest root, as ``uploads/...`` for an upload, else its file name;
        a collection entry keeps its ``#entry``. Sources that are not files are shown as they are."""
        if source.startswith("file://"):
            parts = urlsplit(source)
            path, entry = unquote(parts.path, errors="surrogateescape"), parts.fragment
        elif source.startswith("/"):
            path, _, entry = source.partition("#")
        else:
            return source
        return self._relative(Path(path)) + (f"#{entry}" if entry else "")

    def _relative(self, path: Path) -> str:
        for root, label in self._roots:
            if path.is_relative_to(root):
                return str(Path(label) / path.relative_to(root)) if label else str(path.relative_to(root))
        return path.name

    def scrub(self, text: str) -> str:
        """A message with the absolute paths of the ingest root and the upload directory made relative."""
        for root, label in self._roots:
            text = text.replace(f"{root}/", f"{label}/" if label else "")
        return text

    def document(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A DocumentRecord (as a dict) for the read API."""
        return {**rec, "uri": self.name(rec["uri"]), "source": self.name(rec["source"]),
                "error": self.scrub(rec.get("error") or "")}

    def query(self, result: dict[str, Any]) -> dict[str, Any]:
        """A QueryResult (as a dict) for the read API: the sources of its hits and citations renamed."""
        for key in ("hits", "citations"):
            for item in result.get(key, []):
                item["source"] = self.name(item["source"])
        return result
