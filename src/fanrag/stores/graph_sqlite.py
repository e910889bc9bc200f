"""The entity graph in SQLite: entities, and their mentions in chunks.

Co-occurrence is not stored as entity-pair counts: two entities co-occur when they are mentioned in
the same chunk, so the ``mentions`` table already holds it per chunk, and a self-join aggregates it at
query time. That keeps ``delete_documents`` exact (delete the document's mentions; nothing to
decrement) and writes cheap (one row per mention, not per pair).

Scoring in ``chunks_for_entities``: a chunk scores the sum of idf(e) = ln(1 + N / df(e)) over the
query entities it mentions (N = chunks with any mention); with ``hops=1`` the chunks of the entities
that co-occur most with the query entities get a bonus below any direct match (see _add_neighbours).
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

from ..graph.extract import normalise
from ..types import Chunk
from ._sqlite import SqliteDb, batched, marks, migrate
from .base import Allowed, ScoredId

if TYPE_CHECKING:
    from .factory import OpenContext

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

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """The embedded default: ``home/graph.sqlite``, opened by ``open_stores``."""
        return cls(ctx.settings.home / "graph.sqlite", read_only=ctx.read_only)

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

    def chunks_for_entities(self, names: Sequence[str], k: int, hops: int = 1,
                            allowed: Allowed | None = None) -> list[ScoredId]:
        wanted = list(dict.fromkeys(normalise(n) for n in names))
        if not wanted or k <= 0:
            return []
        with self._db.read() as conn:
            seeds = list(self._ids(conn, wanted).values())
            if not seeds:
                return []
            n_chunks = self._n_chunks(conn)
            idf = self._idf(conn, seeds, n_chunks)
            scores: dict[str, float] = defaultdict(float)
            for entity in seeds:
                for chunk_id in self._postings(conn, entity, allowed):
                    scores[chunk_id] += idf[entity]
            if hops >= 1:
                self._add_neighbours(conn, seeds, min(idf.values()), n_chunks, scores, allowed)
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [ScoredId(cid, score) for cid, score in best]

    @staticmethod
    def _postings(conn: sqlite3.Connection, entity: int, allowed: Allowed | None = None) -> list[str]:
        """The chunks that mention ``entity`` (of ``allowed`` documents only, when given: a filtered
        query ranks only those, with the scores, idf included, that the whole graph gives them)."""
        if allowed is None:
            return [r[0] for r in conn.execute("SELECT chunk_id FROM mentions WHERE entity = ? LIMIT ?",
                                               (entity, MAX_POSTINGS))]
        return [c for c, d in conn.execute("SELECT chunk_id, doc_id FROM mentions WHERE entity = ? LIMIT ?",
                                           (entity, MAX_POSTINGS)) if d in allowed]

    @staticmethod
    def _idf(conn: sqlite3.Connection, entity_ids: list[int], n_chunks: int) -> dict[int, float]:
        """ln(1 + N / df) per entity (entities with no mention left get 0)."""
        out = dict.fromkeys(entity_ids, 0.0)
        for part in batched(entity_ids):
            for entity, df in conn.execute(f"SELECT entity, count(*) FROM mentions WHERE entity IN "
                                           f"({marks(len(part))}) GROUP BY entity", part):
                out[entity] = math.log(1.0 + n_chunks / df)
        return out

    def _add_neighbours(self, conn: sqlite3.Connection, seeds: list[int], floor: float, n_chunks: int,
                        scores: dict[str, float], allowed: Allowed | None = None) -> None:
        """One hop: chunks of the entities that co-occur most (and most specifically) with the seeds.

        A chunk reached only this way scores at most NEIGHBOUR_DISCOUNT * ``floor`` (the lowest seed
        idf), so it never outranks a chunk that mentions a query entity; among direct matches the
        neighbour bonus breaks ties. Bonuses are max-ed, not summed, for the same reason.
        """
        q = marks(len(seeds))
        rows = conn.execute(
            f"SELECT m2.entity, count(*) AS c FROM mentions m1 JOIN mentions m2 ON m2.chunk_id = m1.chunk_id "
            f"WHERE m1.entity IN ({q}) AND m2.entity NOT IN ({q}) GROUP BY m2.entity ORDER BY c DESC LIMIT ?",
            [*seeds, *seeds, 5 * MAX_NEIGHBOURS]).fetchall()
        if not rows:
            return
        idf = self._idf(conn, [e for e, _ in rows], n_chunks)
        # Co-occurring often *and* being specific: "dna" co-occurs with everything and says little.
        ranked = sorted(((c * idf[e], e) for e, c in rows), reverse=True)[:MAX_NEIGHBOURS]
        top = ranked[0][0]
        bonus: dict[str, float] = {}
        for weight, entity in ranked:
            value = NEIGHBOUR_DISCOUNT * floor * weight / top
            for chunk_id in self._postings(conn, entity, allowed):
                bonus[chunk_id] = max(bonus.get(chunk_id, 0.0), value)
        for chunk_id, value in bonus.items():
            scores[chunk_id] += value

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
