"""What the FalkorDB graph store does beyond the GraphStore contract (tests/stores/test_graph_store.py
runs that against it): the same scores as the SQLite store, batched writes, URLs, read-only mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanrag.errors import ConfigError, StoreError
from fanrag.stores.graph_falkordb import BATCH, FalkorGraphStore, parse_falkordb_url
from fanrag.stores.graph_sqlite import SqliteGraphStore
from fanrag.types import Chunk
from tests.conftest import make_settings
from tests.servers.falkordb import falkordb_graph_url, falkordb_server  # noqa: F401 - fixtures

pytest.importorskip("falkordb")

GENES = ["brca1", "tp53", "egfr", "kras", "myc", "parp", "atm", "pten"]


def corpus(n: int) -> list[Chunk]:
    """n chunks over 8 entities with uneven frequencies and overlaps, so idf and co-occurrence vary."""
    out = []
    for i in range(n):
        names = [g for j, g in enumerate(GENES) if i % (j + 2) == 0] or ["orphan"]
        out.append(Chunk.make(f"d{i // 3}", i % 3, f"text {i}", char_start=0, char_end=1,
                              entities=tuple((g, "GENE") for g in names)))
    return out


def test_scores_match_the_sqlite_store(falkordb_graph_url: str, tmp_path: Path) -> None:  # noqa: F811
    chunks = corpus(60)
    falkor, sqlite = FalkorGraphStore(falkordb_graph_url), SqliteGraphStore(tmp_path / "g.sqlite")
    for store in (falkor, sqlite):
        store.add(chunks + chunks[:4])  # repeats in one call: one copy
        store.add(chunks[2:9])  # re-adding: idempotent
        store.delete_documents(["d4", "d7"])
    assert falkor.stats() == sqlite.stats()
    for query in (["BRCA1"], ["tp53", "pten"], ["parp"], ["orphan", "myc"], ["nothing"]):
        for hops in (0, 1):
            got = falkor.chunks_for_entities(query, k=15, hops=hops)
            want = sqlite.chunks_for_entities(query, k=15, hops=hops)
            assert [h.chunk_id for h in got] == [h.chunk_id for h in want], (query, hops)
            assert [h.score for h in got] == pytest.approx([h.score for h in want]), (query, hops)
    falkor.close()
    sqlite.close()


def test_writes_more_than_one_batch(falkordb_graph_url: str) -> None:  # noqa: F811
    chunks = corpus(BATCH * 2 + 7)
    store = FalkorGraphStore(falkordb_graph_url)
    store.add(chunks)
    mentions = sum(len(c.entities) for c in chunks)
    assert store.stats() == {"entities": 9, "mentions": mentions, "chunks": len(chunks)}
    assert store.delete_documents(sorted({c.doc_id for c in chunks})) == mentions
    assert store.stats() == {"entities": 0, "mentions": 0, "chunks": 0}
    store.close()


def test_read_only_reads_and_refuses_writes(falkordb_graph_url: str) -> None:  # noqa: F811
    empty = FalkorGraphStore(falkordb_graph_url, read_only=True)  # the graph does not exist yet
    assert empty.stats() == {"entities": 0, "mentions": 0, "chunks": 0}
    assert empty.chunks_for_entities(["brca1"], k=5) == [] and empty.known_entities(["brca1"]) == []
    FalkorGraphStore(falkordb_graph_url).add(corpus(6))
    assert empty.known_entities(["BRCA1", "x"]) == ["brca1"]
    with pytest.raises(StoreError, match="read-only"):
        empty.add(corpus(1))
    with pytest.raises(StoreError, match="read-only"):
        empty.delete_documents(["d0"])
    empty.close()


def test_urls() -> None:
    assert parse_falkordb_url("falkordb://u:p%40ss@db.example:7000/papers") == {
        "host": "db.example", "port": 7000, "username": "u", "password": "p@ss", "graph": "papers"}
    assert parse_falkordb_url("falkordb://localhost")["graph"] == "fanrag"
    with pytest.raises(ConfigError, match="stores.graph"):
        parse_falkordb_url("redis://localhost/0")


def test_unreachable_server_is_a_store_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match="cannot (connect|create index)"):
        FalkorGraphStore(f"falkordb://127.0.0.1:{port}/g")


def test_open_stores_serves_the_graph_from_falkordb(falkordb_graph_url: str, tmp_path: Path) -> None:  # noqa: F811
    from fanrag.stores import open_stores

    settings = make_settings(tmp_path / "home", stores={"graph": falkordb_graph_url})
    with open_stores(settings, mode="write", dim=8) as stores:
        assert isinstance(stores.graph, FalkorGraphStore)
        stores.graph.add(corpus(3))
    with open_stores(settings, mode="read") as stores:
        assert stores.graph.read_only and stores.graph.known_entities(["tp53"]) == ["tp53"]
