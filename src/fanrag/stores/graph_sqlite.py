"""The entity graph in SQLite: entities, and their mentions in chunks.

Co-occurrence is not stored as entity-pair counts: two entities co-occur when they are mentioned in
the same chunk, so the ``mentions`` table already holds it per chunk, and a self-join aggregates it at
query time. That keeps ``delete_documents`` exact (delete the document's mentions; nothing to
decrement) and writes cheap (one row per mention, not per pair).

Scoring in ``chunks_for_entities``: a chunk scores the sum of idf(e) = ln(1 + N / df(e)) over the
query entities it mentions (N = chunks with any mention); with ``hops=1`` the entities that co-occur
most with the query entities add their chunks at ``NEIGHBOUR_DISCOUNT`` times their idf, weighted by
how often they co-occur.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..graph.extract import normalise
from ..types import Chunk
from ._sqlite import SqliteDb, batched, marks, migrate
from .base import ScoredId

NEIGHBOUR_DISCOUNT = 0.5
MAX_NEIGHBOURS = 20
MAX_POSTINGS = 20_000  # chunks read per entity; a name in every chunk says nothing anyway

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE entities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, label TEXT NOT NULL);
    CREATE TABLE mentions (
        entity INTEGER NOT NULL, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL,
        PRIMARY KEY (entity, chunk_id)) WITHOUT ROWID;
    CREATE INDEX mentions_chunk ON mentions(chunk_id, entity);
    CREATE INDEX mentions_doc ON mentions(doc_id)
    """,
)


class SqliteGraphStore:
    """GraphStore on one SQLite file (``home/graph.sqlite``)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self._db = SqliteDb(Path(path), read_only=read_only)
        if not read_only:
            migrate(self._db, MIGRATIONS)
        self._n_cache: tuple[tuple[int, int], int] | None = None

    def _n_chunks(self, conn: sqlite3.Connection) -> int:
        """Chunks with any mention (the N of idf), recounted only when the database has changed.

        data_version moves when another connection commits; total_changes when this one writes.
        """
        version = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if self._n_cache is None or self._n_cache[0] != version:
            n = conn.execute("SELECT count(DISTINCT chunk_id) FROM mentions").fetchone()[0]
            self._n_cache = (version, n)
        return self._n_cache[1]

    def add(self, chunks: Sequence[Chunk]) -> None:
        names = {name: label for c in chunks for name, label in c.entities}
        with self._db.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO entities (name, label) VALUES (?, ?)", names.items())
            ids = self._ids(conn, list(names))
            chunk_ids = [c.chunk_id for c in chunks]
            # Re-adding a chunk replaces its mentions: idempotent, and exact if its entities changed.
            for part in batched(chunk_ids):
                conn.execute(f"DELETE FROM mentions WHERE chunk_id IN ({marks(len(part))})", part)
            conn.executemany("INSERT OR IGNORE INTO mentions (entity, chunk_id, doc_id) VALUES (?, ?, ?)",
                             [(ids[name], c.chunk_id, c.doc_id) for c in chunks for name, _ in c.entities])

    @staticmethod
    def _ids(conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in batched(names):
            out.update(conn.execute(
                f"SELECT name, id FROM entities WHERE name IN ({marks(len(part))})", part).fetchall())
        return out

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Remove the documents' mentions (and entities left with none); returns mentions removed."""
        ids = list(dict.fromkeys(doc_ids))
        removed = 0
        with self._db.tx() as conn:
            for part in batched(ids):
                q = marks(len(part))
                touched = [r[0] for r in conn.execute(
                    f"SELECT DISTINCT entity FROM mentions WHERE doc_id IN ({q})", part)]
                removed += conn.execute(f"DELETE FROM mentions WHERE doc_id IN ({q})", part).rowcount
                for ents in batched(touched):
                    conn.execute(f"DELETE FROM entities WHERE id IN ({marks(len(ents))}) AND NOT EXISTS "
                                 "(SELECT 1 FROM mentions m WHERE m.entity = entities.id)", ents)
        return removed

    def chunks_for_entities(self, names: Sequence[str], k: int, hops: int = 1) -> list[ScoredId]:
        wanted = list(dict.fromkeys(normalise(n) for n in names))
        if not wanted or k <= 0:
            return []
        with self._db.read() as conn:
            seeds = self._ids(conn, wanted)
            if not seeds:
                return []
            n_chunks = self._n_chunks(conn)
            scores: dict[str, float] = defaultdict(float)
            seed_ids = list(seeds.values())
            self._score_chunks(conn, {e: 1.0 for e in seed_ids}, n_chunks, scores)
            if hops >= 1:
                self._score_chunks(conn, self._neighbours(conn, seed_ids), n_chunks, scores)
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [ScoredId(cid, score) for cid, score in best]

    @staticmethod
    def _df(conn: sqlite3.Connection, entity_ids: list[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for part in batched(entity_ids):
            out.update(conn.execute(
                f"SELECT entity, count(*) FROM mentions WHERE entity IN ({marks(len(part))}) GROUP BY entity",
                part).fetchall())
        return out

    def _score_chunks(self, conn: sqlite3.Connection, weights: dict[int, float], n_chunks: int,
                      scores: dict[str, float]) -> None:
        """Add weight * idf(entity) to every chunk mentioning each entity."""
        df = self._df(conn, list(weights))
        for entity, weight in weights.items():
            if not df.get(entity):
                continue
            idf = math.log(1.0 + n_chunks / df[entity])
            for (chunk_id,) in conn.execute(
                    "SELECT chunk_id FROM mentions WHERE entity = ? LIMIT ?", (entity, MAX_POSTINGS)):
                scores[chunk_id] += weight * idf

    @staticmethod
    def _neighbours(conn: sqlite3.Connection, seed_ids: list[int]) -> dict[int, float]:
        """Entities co-occurring with the seeds -> NEIGHBOUR_DISCOUNT * (co-occurrences / the most)."""
        q = marks(len(seed_ids))
        rows = conn.execute(
            f"SELECT m2.entity, count(*) AS c FROM mentions m1 JOIN mentions m2 ON m2.chunk_id = m1.chunk_id "
            f"WHERE m1.entity IN ({q}) AND m2.entity NOT IN ({q}) GROUP BY m2.entity ORDER BY c DESC LIMIT ?",
            [*seed_ids, *seed_ids, MAX_NEIGHBOURS]).fetchall()
        if not rows:
            return {}
        top = rows[0][1]
        return {entity: NEIGHBOUR_DISCOUNT * c / top for entity, c in rows}

    def known_entities(self, names: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(normalise(n) for n in names))
        with self._db.read() as conn:
            known = set(self._ids(conn, wanted))
        return [n for n in wanted if n in known]

    def stats(self) -> dict[str, int]:
        with self._db.read() as conn:
            return {
                "entities": conn.execute("SELECT count(*) FROM entities").fetchone()[0],
                "mentions": conn.execute("SELECT count(*) FROM mentions").fetchone()[0],
                "chunks": conn.execute("SELECT count(DISTINCT chunk_id) FROM mentions").fetchone()[0],
            }

    def close(self) -> None:
        self._db.close()
