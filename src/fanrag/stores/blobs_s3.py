"""Content-addressed blobs in S3 (or any S3-compatible server: MinIO, Ceph, moto): ``s3://bucket/prefix``.

Each blob is the object ``prefix/<sha256>``. ``put`` and ``put_file`` ask HEAD first and upload only what
is missing, so re-ingesting a file costs one request; files go up with boto3's managed transfer, which
switches to a parallel multipart upload above ``multipart_threshold``. S3 writes are atomic per object,
so a reader never sees a partial blob, and an interrupted multipart upload leaves no object behind.

The endpoint (for servers other than AWS) is, first found: the ``endpoint_url`` argument, the URL's
``?endpoint=`` query parameter, the ``FANRAG_S3_ENDPOINT`` environment variable. Credentials and region
come from boto3's usual chain (``AWS_ACCESS_KEY_ID``, ``~/.aws``, instance roles, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, StoreError, require

if TYPE_CHECKING:
    from .factory import OpenContext

ENDPOINT_ENV = "FANRAG_S3_ENDPOINT"
MULTIPART_THRESHOLD = 16 << 20  # bytes; larger files go up in parts
MULTIPART_CHUNK = 8 << 20
_HASH_PIECE = 1 << 20
_KEY = re.compile(r"^[0-9a-f]{64}$")
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/some/prefix?endpoint=http://host:9000`` -> (bucket, "some/prefix", endpoint or "")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError("stores.blobs", f"expected s3://bucket/prefix, got {url!r}")
    endpoint = parse_qs(parts.query).get("endpoint", [""])[0]
    return parts.netloc, parts.path.strip("/"), endpoint


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for piece in iter(lambda: src.read(_HASH_PIECE), b""):
            digest.update(piece)
    return digest.hexdigest()


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3BlobStore:
    """BlobStore on an S3 bucket. Thread-safe (boto3 clients are)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """``stores.blobs = s3://bucket/prefix?endpoint=URL``, opened by ``open_stores``."""
        return cls(url, read_only=ctx.read_only)

    def __init__(self, url: str, *, endpoint_url: str | None = None, read_only: bool = False,
                 multipart_threshold: int = MULTIPART_THRESHOLD, client: Any = None) -> None:
        self.bucket, self.prefix, query_endpoint = parse_s3_url(url)
        self.url = url
        self.read_only = read_only
        self.endpoint_url = endpoint_url or query_endpoint or os.environ.get(ENDPOINT_ENV) or None
        boto3 = require("boto3", feature="the S3 blob store", extra="s3")
        transfer = require("boto3.s3.transfer", feature="the S3 blob store", extra="s3")
        botocore = require("botocore.exceptions", feature="the S3 blob store", extra="s3")
        boto3_errors = require("boto3.exceptions", feature="the S3 blob store", extra="s3")
        self._errors: tuple[type[Exception], ...] = (
            botocore.BotoCoreError, botocore.ClientError, boto3_errors.Boto3Error)
        self._client = client or boto3.client("s3", endpoint_url=self.endpoint_url)
        self._transfer = transfer.TransferConfig(multipart_threshold=multipart_threshold,
                                                 multipart_chunksize=min(MULTIPART_CHUNK, multipart_threshold))

    def _object(self, key: str) -> str:
        if not _KEY.match(key):
            raise StoreError(f"invalid blob key {key!r}: expected 64 hex digits (sha256)")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, exc: Exception) -> StoreError:
        return StoreError(f"s3://{self.bucket}/{self.prefix}: cannot {action}: {exc}")

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url}: blob store opened read-only")

    def put(self, data: bytes) -> str:
        self._writable()
        key = hashlib.sha256(data).hexdigest()
        if self.exists(key):
            return key
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._object(key), Body=data)
        except self._errors as exc:
            raise self._fail(f"store blob {key}", exc) from exc
        return key

    def put_file(self, path: str) -> str:
        self._writable()
        try:
            key = _file_sha256(path)
        except OSError as exc:
            raise StoreError(f"cannot store {path}: {exc}") from exc
        if self.exists(key):
            return key
        try:
            self._client.upload_file(path, self.bucket, self._object(key), Config=self._transfer)
        except self._errors as exc:
            raise self._fail(f"store {path}", exc) from exc
        return key

    def get(self, key: str) -> bytes:
        name = self._object(key)
        try:
            data: bytes = self._client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        except self._errors as exc:
            if _code(exc) in _MISSING:
                raise StoreError(f"no blob {key}") from None
            raise self._fail(f"read blob {key}", exc) from exc
        return data

    def exists(self, key: str) -> bool:
        name = self._object(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._fail(f"look up blob {key}", exc) from exc
        return True

    def delete(self, key: str) -> None:
        self._writable()
        name = self._object(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)  # absent: S3 answers 204 all the same
        except self._errors as exc:
            raise self._fail(f"delete blob {key}", exc) from exc

    def close(self) -> None:
        self._client.close()
