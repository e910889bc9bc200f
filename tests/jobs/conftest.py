"""Job-queue tests run against a real Redis server (tests/servers/redis.py); each test its own stream."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.servers.redis import redis_server  # noqa: F401  (the session-scoped fixture)

pytest.importorskip("redis", reason="job-queue tests need: pip install 'fanrag[redis]'")


@pytest.fixture
def queue_url(redis_server: str) -> str:  # noqa: F811
    """A fresh stream; retries are quick so poison files reach the dead-letter stream fast."""
    return (f"{redis_server}?stream=t-{uuid.uuid4().hex[:10]}&max_attempts=3&retry_base=0.05&retry_cap=0.2"
            "&reclaim_idle=1&block=0.2")


def write_docs(root: Path, n: int) -> list[Path]:
    """``n`` tiny Markdown files (one chunk each: ingest cost is per document, not per byte)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"doc{i:02d}.md"
        p.write_text(f"# Note {i}\n\nTide table number {i}: the moon raises water {i} times.\n")
        paths.append(p)
    return paths


def write_poison(root: Path) -> Path:
    p = root / "poison.txt"
    p.write_bytes(b"\x00\x01\x02binary\xff\xfe" * 20)
    return p


def committed_sources(home: Path) -> list[str]:
    """Source URIs of the committed documents in the index at ``home`` (one per document, so duplicates
    would show); also checks that every store holds the same chunks."""
    from fanrag.engine import Engine

    with Engine.open(home, mode="read") as engine:
        info = engine.status()
        docs = engine.stores.meta.documents(status="committed")
    assert info.vectors == info.keyword_chunks == info.chunks == sum(d.n_chunks for d in docs)
    return sorted(d.source for d in docs)
