"""The entity graph in FalkorDB, through Cypher: ``falkordb://[user:password@]host:port/graph``.

Model: ``(:Chunk {id, doc})-[:MENTIONS]->(:Entity {name, label})``. A chunk node exists only while it
mentions something, so ``stats()["chunks"]`` counts the same chunks as the SQLite store. Writes go in
batches of ``BATCH`` chunks, each one ``UNWIND`` query; re-adding a chunk first detaches its old node,
which makes ``add`` idempotent and exact when a chunk's entities change.

Scoring is the SQLite store's (see graph_sqlite): a chunk scores the sum of idf(e) = ln(1 + N / df(e))
over the query entities it mentions; with ``hops=1`` the chunks of the entities that co-occur most (and
most specifically) with the query entities get a bonus below any direct match.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, StoreError, require
from ..graph.extract import normalise
from ..types import Chunk
from .base import Allowed, ScoredId
from .graph_sqlite import MAX_NEIGHBOURS, MAX_POSTINGS, NEIGHBOUR_DISCOUNT

if TYPE_CHECKING:
    from .factory import OpenContext

BATCH = 500  # chunks per write query
DEFAULT_GRAPH = "fanrag"
INDEXES = ("CREATE INDEX FOR (e:Entity) ON (e.name)", "CREATE INDEX FOR (c:Chunk) ON (c.id)",
           "CREATE INDEX FOR (c:Chunk) ON (c.doc)")

DETACH_CHUNKS = "UNWIND $ids AS id MATCH (c:Chunk {id: id}) DETACH DELETE c"
MERGE_ENTITIES = "UNWIND $entities AS e MERGE (n:Entity {name: e[0]}) ON CREATE SET n.label = e[1]"
CREATE_MENTIONS = ("UNWIND $rows AS r CREATE (c:Chunk {id: r[0], doc: r[1]}) WITH c, r "
                   "UNWIND r[2] AS name MATCH (e:Entity {name: name}) CREATE (c)-[:MENTIONS]->(e)")
DOC_MENTIONS = ("UNWIND $docs AS d MATCH (c:Chunk {doc: d})-[:MENTIONS]->(e:Entity) "
                "RETURN count(e), collect(DISTINCT e.name)")
DELETE_DOCS = "UNWIND $docs AS d MATCH (c:Chunk {doc: d}) DETACH DELETE c"
DELETE_ORPHANS = ("UNWIND $names AS name MATCH (e:Entity {name: name}) "
                  "WHERE NOT (e)<-[:MENTIONS]-(:Chunk) DELETE e")
KNOWN = "UNWIND $names AS name MATCH (e:Entity {name: name}) RETURN e.name"
POSTINGS = ("UNWIND $names AS name MATCH (e:Entity {name: name})<-[:MENTIONS]-(c:Chunk) "
            "WITH e.name AS name, collect(c.id) AS ids RETURN name, size(ids), ids[0..$max]")
# The same with each chunk's document, for a filtered query (its df stays the whole graph's).
POSTINGS_DOCS = ("UNWIND $names AS name MATCH (e:Entity {name: name})<-[:MENTIONS]-(c:Chunk) "
                 "WITH e.name AS name, collect([c.id, c.doc]) AS ids RETURN name, size(ids), ids[0..$max]")
# WITH s: start from the seeds' index lookup (else the planner scans every entity); count(c), not
# count(*), which FalkorDB 4 answers with one per group over this pattern.
NEIGHBOURS = ("UNWIND $names AS name MATCH (s:Entity {name: name}) WITH s "
              "MATCH (s)<-[:MENTIONS]-(c:Chunk)-[:MENTIONS]->(n:Entity) WHERE NOT n.name IN $names "
              "RETURN n.name, count(c) AS co ORDER BY co DESC, n.name LIMIT $limit")
COUNT_CHUNKS = "MATCH (c:Chunk) RETURN count(c)"
STATS = ("MATCH (c:Chunk) WITH count(c) AS chunks "
         "OPTIONAL MATCH (:Chunk)-[m:MENTIONS]->() WITH chunks, count(m) AS mentions "
         "OPTIONAL MATCH (e:Entity) RETURN count(e), mentions, chunks")


def parse_falkordb_url(url: str) -> dict[str, Any]:
    """``falkordb://user:pw@host:port/graph`` -> keyword arguments of ``FalkorDB`` plus ``graph``."""
    parts = urlsplit(url)
    if parts.scheme != "falkordb" or not parts.hostname:
        raise ConfigError("stores.graph", f"expected falkordb://host:port/graph, got {url!r}")
    return {"host": parts.hostname, "port": parts.port or 6379,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "graph": parts.path.strip("/") or DEFAULT_GRAPH}


def _batches(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _mention_rows(chunks: Sequence[Chunk]) -> list[tuple[str, str, list[str]]]:
    """(chunk_id, doc_id, distinct entity names) per distinct chunk id (repeats merge, as in SQLite)."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for c in chunks:
        names = rows.setdefault(c.chunk_id, (c.chunk_id, c.doc_id, []))[2]
        for name, _ in c.entities:
            if name not in names:
                names.append(name)
    return list(rows.values())


def _idf(n_chunks: int, df: int) -> float:
    return math.log(1.0 + n_chunks / df) if df else 0.0


class FalkorGraphStore:
    """GraphStore on one FalkorDB graph. Thread-safe (redis-py's connection pool)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """``stores.graph = falkordb://host:port/graph``, opened by ``open_stores``."""
        return cls(url, read_only=ctx.read_only)

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        falkordb = require("falkordb", feature="the FalkorDB graph store", extra="falkordb")
        self._redis_errors = require("redis.exceptions", feature="the FalkorDB graph store",
                                     extra="falkordb").RedisError
        options = parse_falkordb_url(url)
        self.url = url
        self.name = options.pop("graph")
        self.read_only = read_only
        try:
            self._db = falkordb.FalkorDB(**options)
            self._graph = self._db.select_graph(self.name)
        except self._redis_errors as exc:
            raise StoreError(f"{url}: cannot connect to FalkorDB: {exc}") from exc
        if not read_only:
            self._create_indexes()

    # --- plumbing ---------------------------------------------------------------------------------

    def _run(self, query: str, params: dict[str, Any] | None = None, *, write: bool = False) -> list[list[Any]]:
        if write and self.read_only:
            raise StoreError(f"{self.url}: graph store opened read-only")
        try:
            run = self._graph.query if write else self._graph.ro_query
            rows: list[list[Any]] = run(query, params or {}).result_set
        except self._redis_errors as exc:
            if not write and "empty key" in str(exc):  # the graph does not exist yet: nothing in it
                return []
            raise StoreError(f"{self.url}: graph query failed: {exc}") from exc
        return rows

    def _create_indexes(self) -> None:
        for statement in INDEXES:
            try:
                self._graph.query(statement)
            except self._redis_errors as exc:
                if "already indexed" not in str(exc):
                    raise StoreError(f"{self.url}: cannot create index: {exc}") from exc

    # --- writes -----------------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk]) -> None:
        labels = {name: label for c in chunks for name, label in c.entities}
        for part in _batches(_mention_rows(chunks)):
            self._run(DETACH_CHUNKS, {"ids": [chunk_id for chunk_id, _, _ in part]}, write=True)
            names = sorted({name for _, _, row_names in part for name in row_names})
            if names:
                self._run(MERGE_ENTITIES, {"entities": [[n, labels[n]] for n in names]}, write=True)
                self._run(CREATE_MENTIONS, {"rows": [list(r) for r in part if r[2]]}, write=True)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Remove the documents' chunks and mentions (and entities left with none); returns mentions removed."""
        removed = 0
        for part in _batches(list(dict.fromkeys(doc_ids))):
            params = {"docs": list(part)}
            self._run(DELETE_DOCS, {"docs": []}, write=True)  # refuses early when read-only
            rows = self._run(DOC_MENTIONS, params)
            count, names = rows[0] if rows else (0, [])
            self._run(DELETE_DOCS, params, write=True)
            if names:
                self._run(DELETE_ORPHANS, {"names": names}, write=True)
            removed += count
        return removed

    # --- reads ------------------------------------------------------------------------------------

    def _postings(self, names: list[str], allowed: Allowed | None = None) -> dict[str, tuple[int, list[str]]]:
        """name -> (df, up to MAX_POSTINGS chunk ids) for the names that have mentions; with ``allowed``,
        only the chunks of those documents (df counts them all)."""
        if allowed is None:
            rows = self._run(POSTINGS, {"names": names, "max": MAX_POSTINGS})
            return {name: (df, ids) for name, df, ids in rows}
        rows = self._run(POSTINGS_DOCS, {"names": names, "max": MAX_POSTINGS})
        return {name: (df, [c for c, d in pairs if d in allowed]) for name, df, pairs in rows}

    def chunks_for_entities(self, names: Sequence[str], k: int, hops: int = 1,
                            allowed: Allowed | None = None) -> list[ScoredId]:
        wanted = list(dict.fromkeys(normalise(n) for n in names))
        if not wanted or k <= 0:
            return []
        postings = self._postings(wanted, allowed)
        if not postings:
            return []
        n_chunks = self._run(COUNT_CHUNKS)[0][0]
        idf = {name: _idf(n_chunks, df) for name, (df, _) in postings.items()}
        scores: dict[str, float] = defaultdict(float)
        for name, (_, ids) in postings.items():
            for chunk_id in ids:
                scores[chunk_id] += idf[name]
        if hops >= 1:
            self._add_neighbours(list(postings), min(idf.values()), n_chunks, scores, allowed)
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [ScoredId(cid, score) for cid, score in best]

    def _add_neighbours(self, seeds: list[str], floor: float, n_chunks: int, scores: dict[str, float],
                        allowed: Allowed | None = None) -> None:
        """One hop, as SqliteGraphStore._add_neighbours: bonuses below any direct match, max-ed not summed."""
        rows = self._run(NEIGHBOURS, {"names": seeds, "limit": 5 * MAX_NEIGHBOURS})
        if not rows:
            return
        postings = self._postings([name for name, _ in rows], allowed)
        weights = sorted(((co * _idf(n_chunks, postings[name][0]), name) for name, co in rows if name in postings),
                         reverse=True)[:MAX_NEIGHBOURS]
        if not weights or weights[0][0] <= 0:
            return
        top = weights[0][0]
        bonus: dict[str, float] = {}
        for weight, name in weights:
            value = NEIGHBOUR_DISCOUNT * floor * weight / top
            for chunk_id in postings[name][1]:
                bonus[chunk_id] = max(bonus.get(chunk_id, 0.0), value)
        for chunk_id, value in bonus.items():
            scores[chunk_id] += value

    def known_entities(self, names: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(normalise(n) for n in names))
        known = {row[0] for row in self._run(KNOWN, {"names": wanted})} if wanted else set()
        return [n for n in wanted if n in known]

    def stats(self) -> dict[str, int]:
        rows = self._run(STATS)
        entities, mentions, chunks = rows[0] if rows else (0, 0, 0)
        return {"entities": entities, "mentions": mentions, "chunks": chunks}

    def close(self) -> None:
        self._db.close()
