"""What the S3 blob store does beyond the BlobStore contract (which tests/stores/test_blob_store.py runs
against it): multipart uploads, HEAD before PUT, endpoint configuration, read-only mode, open_stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fanrag.errors import ConfigError, StoreError
from fanrag.stores.blobs_s3 import S3BlobStore, parse_s3_url
from tests.conftest import make_settings
from tests.servers.s3 import s3_bucket_url, s3_server  # noqa: F401 - fixtures

pytest.importorskip("boto3")


def _count_calls(store: S3BlobStore, operation: str) -> list[str]:
    calls: list[str] = []
    store._client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(operation))
    return calls


def test_large_files_go_up_in_parts(s3_bucket_url: str, tmp_path: Path) -> None:  # noqa: F811
    store = S3BlobStore(s3_bucket_url, multipart_threshold=5 << 20)  # S3's smallest part
    data = bytes(range(256)) * (12 << 12)  # 12 MiB: three parts
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    parts = _count_calls(store, "UploadPart")
    key = store.put_file(str(src))
    assert key == hashlib.sha256(data).hexdigest()
    assert len(parts) == 3
    head = store._client.head_object(Bucket=store.bucket, Key=f"blobs/{key}")
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a multipart object
    assert store.get(key) == data
    store.close()


def test_put_asks_head_first_and_uploads_only_what_is_missing(s3_bucket_url: str,  # noqa: F811
                                                               tmp_path: Path) -> None:
    store = S3BlobStore(s3_bucket_url)
    puts = _count_calls(store, "PutObject")
    src = tmp_path / "doc.txt"
    src.write_bytes(b"hello")
    key = store.put(b"hello")
    assert store.put(b"hello") == key == store.put_file(str(src))
    assert puts == ["PutObject"]
    store.close()


def test_endpoint_from_argument_query_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("FANRAG_S3_ENDPOINT", "http://from-env:9000")
    assert S3BlobStore("s3://b/p").endpoint_url == "http://from-env:9000"
    assert S3BlobStore("s3://b/p?endpoint=http://from-query:9000").endpoint_url == "http://from-query:9000"
    assert S3BlobStore("s3://b/p?endpoint=http://q:1", endpoint_url="http://arg:2").endpoint_url == "http://arg:2"
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b", "")
    with pytest.raises(ConfigError, match="stores.blobs"):
        parse_s3_url("s3:///no-bucket")


def test_read_only_refuses_writes_and_missing_buckets_are_store_errors(s3_bucket_url: str,  # noqa: F811
                                                                       s3_server: str) -> None:  # noqa: F811
    key = S3BlobStore(s3_bucket_url).put(b"x")
    reader = S3BlobStore(s3_bucket_url, read_only=True)
    assert reader.get(key) == b"x"
    with pytest.raises(StoreError, match="read-only"):
        reader.put(b"y")
    with pytest.raises(StoreError, match="read-only"):
        reader.delete(key)
    with pytest.raises(StoreError, match="cannot store blob"):
        S3BlobStore(f"s3://no-such-bucket-here/p?endpoint={s3_server}").put(b"z")


def test_open_stores_serves_blobs_from_s3(s3_bucket_url: str, tmp_path: Path) -> None:  # noqa: F811
    from fanrag.stores import open_stores

    settings = make_settings(tmp_path / "home", stores={"blobs": s3_bucket_url})
    with open_stores(settings, mode="write", dim=8) as stores:
        assert isinstance(stores.blobs, S3BlobStore)
        key = stores.blobs.put(b"through open_stores")
    assert S3BlobStore(s3_bucket_url).get(key) == b"through open_stores"
