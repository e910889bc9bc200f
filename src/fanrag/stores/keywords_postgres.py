"""Keyword search in PostgreSQL (``FANRAG_KEYWORDS=postgresql://…``): BM25 over PostgreSQL's full-text
index, the alternative to the embedded tantivy index for deployments that keep everything in one database.

    fanrag_keywords        chunk_id PRIMARY KEY, doc_id, title, body, dl (tokens), tsv (generated: English
                           stemming and stop words, title and body); GIN on tsv, b-tree on doc_id
    fanrag_keyword_df      lexeme -> number of chunks that contain it (kept up to date by add/delete)
    fanrag_keyword_stats   one row: number of chunks, total tokens (for BM25's average length)

Why not ``ts_rank``: it has no inverse document frequency, so a rare term weighs no more than "patient".
On SciFact, nDCG@10 was 0.46 with ts_rank (0.60 with title/body weights) against 0.689 with BM25 computed
here (k1 0.9, b 0.4, as Anserini), and tantivy's 0.684. Scoring every matching chunk costs 102 ms per query
(p50) on SciFact, so BM25 rescores a candidate pool: the ``candidates`` best chunks by ts_rank (300 by
default: 0.683, 26 ms; ``?candidates=0`` scores every match). tantivy answers in 0.4 ms: it stays the
default. Figures: bench/results/stores.json (the ts_rank ones from a one-off run before this module existed). Keyword writes are serialised by a lock on the statistics row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, StoreError
from ..types import Chunk
from ._pg import PgDb, migrate, schema_version
from .base import Allowed, ScoredId

if TYPE_CHECKING:
    from .factory import OpenContext

COMPONENT = "keywords"
K1, B = 0.9, 0.4

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE fanrag_keywords (
        chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', body TEXT NOT NULL,
        dl INTEGER NOT NULL DEFAULT 0,
        tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'D')
        ) STORED);
    CREATE INDEX fanrag_keywords_tsv ON fanrag_keywords USING GIN (tsv);
    CREATE INDEX fanrag_keywords_doc ON fanrag_keywords(doc_id);
    CREATE TABLE fanrag_keyword_df (lexeme TEXT PRIMARY KEY, df BIGINT NOT NULL);
    CREATE TABLE fanrag_keyword_stats (
        id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL, total_dl BIGINT NOT NULL);
    INSERT INTO fanrag_keyword_stats VALUES (1, 0, 0)
    """,
)

# The query's lexemes (stemmed, stop words gone), each quoted so that no character of the user's text
# is tsquery syntax, OR-ed (any term may match, as in BM25). No lexemes: an empty query, no match.
_QUERY = """
WITH q AS (
    SELECT array_agg(l) AS ls, to_tsquery('simple', coalesce(string_agg(quote_literal(l), ' | '), '')) AS q
    FROM unnest(tsvector_to_array(to_tsvector('english', %(text)s))) AS l
),
cand AS (
    SELECT chunk_id, tsv, dl FROM fanrag_keywords, q WHERE tsv @@ q.q {where}{pool}
),
tf AS (
    SELECT c.chunk_id, c.dl, u.lexeme, array_length(u.positions, 1) AS tf
    FROM cand c, q, unnest(c.tsv) u WHERE u.lexeme = ANY(q.ls)
)
SELECT tf.chunk_id, sum(
    ln(1 + (st.n - d.df + 0.5) / (d.df + 0.5))
    * tf.tf * %(k1p1)s / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * tf.dl / greatest(st.total_dl::float8 / greatest(st.n, 1), 1)))
) AS score
FROM tf JOIN fanrag_keyword_df d USING (lexeme), fanrag_keyword_stats st
GROUP BY tf.chunk_id ORDER BY score DESC, tf.chunk_id LIMIT %(k)s
"""
_POOL = "ORDER BY ts_rank('{0.5,0.5,0.5,1.0}', tsv, q.q, 1) DESC LIMIT %(pool)s"

# Statistics of the rows matching {where}: document frequencies go up (sign +1) or down (-1).
_DF = """
INSERT INTO fanrag_keyword_df AS d (lexeme, df)
SELECT u.lexeme, %(sign)s * count(*) FROM fanrag_keywords k, unnest(k.tsv) u WHERE {where}
GROUP BY u.lexeme ORDER BY u.lexeme
ON CONFLICT (lexeme) DO UPDATE SET df = d.df + excluded.df
"""
_STATS = """
UPDATE fanrag_keyword_stats st SET n = st.n + %(sign)s * s.rows, total_dl = st.total_dl + %(sign)s * s.tokens
FROM (SELECT count(*) AS rows, coalesce(sum(dl), 0) AS tokens FROM fanrag_keywords k WHERE {where}) s
"""
_DL = """
UPDATE fanrag_keywords k SET dl = (SELECT coalesce(sum(array_length(positions, 1)), 0) FROM unnest(k.tsv))
WHERE chunk_id = ANY(%(ids)s)
"""


def _clean(text: str) -> str:
    return text.replace("\x00", "")  # PostgreSQL text cannot hold NUL


def _remove(conn: Any, where: str, params: dict[str, Any]) -> int:
    """Delete rows and take them out of the statistics, in the caller's transaction.

    It first locks the statistics row, so keyword writes run one at a time: without it two writers lock the
    statistics and frequency rows in opposite orders (deadlocks), and under READ COMMITTED both count the same
    rows when they replace or delete the same chunks (the statistics drift)."""
    conn.execute("SELECT 1 FROM fanrag_keyword_stats WHERE id = 1 FOR UPDATE")
    conn.execute(_DF.format(where=where), {**params, "sign": -1})
    conn.execute(_STATS.format(where=where), {**params, "sign": -1})
    return int(conn.execute(f"DELETE FROM fanrag_keywords k WHERE {where}", params).rowcount)


def parse_url(url: str) -> tuple[str, int]:
    """The DSN without fanrag's ``candidates`` parameter, and that parameter (the BM25 candidate pool)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    try:
        pool = int(query.pop("candidates", 300))
    except ValueError as exc:
        raise ConfigError("stores.keywords", f"candidates: {exc}") from exc
    if pool < 0:
        raise ConfigError("stores.keywords", "candidates must be >= 0 (0 = score every match)")
    return urlunsplit(parts._replace(query=urlencode(query))), pool


class PgKeywordStore:
    """KeywordStore on PostgreSQL full-text search."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """``stores.keywords = postgresql://user@host/db?candidates=N``, opened by ``open_stores``."""
        return cls(url, read_only=ctx.read_only)

    def __init__(self, url: str, *, read_only: bool = False, pool_size: int = 4) -> None:
        dsn, self.candidates = parse_url(url)
        self.read_only = read_only
        self._db = PgDb(dsn, read_only=read_only, max_size=pool_size)
        pool = _POOL if self.candidates else ""
        self._sql = _QUERY.format(where="", pool=pool)
        # a filter is a WHERE in the candidate pool: BM25 ranks (and the pool holds) allowed chunks only
        self._sql_among = _QUERY.format(where="AND doc_id = ANY(%(docs)s) ", pool=pool)
        try:
            if read_only:
                if schema_version(self._db, COMPONENT) != len(MIGRATIONS):
                    raise StoreError(f"{self._db.where}: no keyword index here (run `fanrag ingest` first)")
            else:
                migrate(self._db, COMPONENT, MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def add(self, chunks: Sequence[Chunk], titles: dict[str, str] | None = None) -> None:
        last = {c.chunk_id: c for c in chunks}  # one row per id: the upsert may not see an id twice
        # the chunk's header (title › section path ...) when it has one, else the bare title
        rows = [(c.chunk_id, c.doc_id, _clean(c.header or (titles or {}).get(c.doc_id, "")), _clean(c.text))
                for c in last.values()]
        params = {"ids": list(last)}
        where = "k.chunk_id = ANY(%(ids)s)"

        def write(conn: Any) -> None:
            _remove(conn, where, params)  # a re-added chunk replaces its old row and statistics
            with conn.cursor().copy("COPY fanrag_keywords (chunk_id, doc_id, title, body) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(_DL, params)
            conn.execute(_DF.format(where=where), {**params, "sign": 1})
            conn.execute(_STATS.format(where=where), {**params, "sign": 1})
        if rows:
            self._db.run(write, write=True)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = sorted(set(doc_ids))
        if not ids:
            return 0
        return int(self._db.run(lambda conn: _remove(conn, "k.doc_id = ANY(%(ids)s)", {"ids": ids}), write=True))

    def search(self, query: str, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        if allowed is not None and not allowed:
            return []
        params = {"text": _clean(query)[:10_000], "k": k, "pool": self.candidates, "k1": K1, "k1p1": K1 + 1, "b": B}
        if allowed is None:
            rows = self._db.query(self._sql, params)
        else:
            rows = self._db.query(self._sql_among, {**params, "docs": list(allowed)})
        return [ScoredId(str(cid), float(score)) for cid, score in rows]

    def count(self) -> int:
        return int(self._db.query("SELECT n FROM fanrag_keyword_stats")[0][0])

    def close(self) -> None:
        self._db.close()
