"""GraphStore contract (every backend): mentions, idf-weighted lookup, 1-hop neighbours, exact deletes."""

from __future__ import annotations

from fanrag.stores.base import GraphStore
from fanrag.types import Chunk


def chunk(doc_id: str, position: int, *names: str) -> Chunk:
    return Chunk.make(doc_id, position, f"{doc_id} {position} {' '.join(names)}", char_start=0, char_end=1,
                      entities=tuple((n, "TEST") for n in names))


# "common" is in every chunk; "brca1" and "tp53" are rare; "parp" only co-occurs with brca1.
C = [
    chunk("d1", 0, "brca1", "tp53", "common"),
    chunk("d1", 1, "brca1", "common"),
    chunk("d2", 0, "tp53", "common"),
    chunk("d3", 0, "common", "parp"),
    chunk("d3", 1, "brca1", "parp", "common"),
    chunk("d4", 0, "common"),
]


def ids(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_is_a_graph_store(graph_store) -> None:
    assert isinstance(graph_store, GraphStore)


def test_more_and_rarer_entities_rank_higher(graph_store) -> None:
    graph_store.add(C)
    hits = graph_store.chunks_for_entities(["BRCA1", "tp53"], k=10, hops=0)
    assert ids(hits)[0] == C[0].chunk_id  # both entities
    assert set(ids(hits)) == {C[0].chunk_id, C[1].chunk_id, C[2].chunk_id, C[4].chunk_id}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    rare = graph_store.chunks_for_entities(["tp53"], k=10, hops=0)[0].score
    common = graph_store.chunks_for_entities(["common"], k=10, hops=0)[0].score
    assert rare > common


def test_one_hop_adds_neighbour_chunks_at_a_discount(graph_store) -> None:
    graph_store.add(C)
    direct = graph_store.chunks_for_entities(["parp"], k=10, hops=0)
    assert set(ids(direct)) == {C[3].chunk_id, C[4].chunk_id}
    hop = graph_store.chunks_for_entities(["parp"], k=10, hops=1)
    assert C[1].chunk_id in ids(hop)  # brca1 co-occurs with parp
    assert min(h.score for h in hop if h.chunk_id in ids(direct)) > \
        max(h.score for h in hop if h.chunk_id == C[1].chunk_id)
    assert graph_store.chunks_for_entities(["unknown"], k=10) == []


def test_readd_is_idempotent_and_delete_is_exact(graph_store) -> None:
    graph_store.add(C)
    graph_store.add(C[:2])
    assert graph_store.stats() == {"entities": 4, "mentions": 13, "chunks": 6}
    assert graph_store.delete_documents(["d3", "absent"]) == 5
    assert graph_store.known_entities(["parp", "brca1", "nothing"]) == ["brca1"]
    assert graph_store.stats() == {"entities": 3, "mentions": 8, "chunks": 4}
    hop = graph_store.chunks_for_entities(["brca1"], k=10, hops=1)
    assert C[3].chunk_id not in ids(hop) and C[4].chunk_id not in ids(hop)
