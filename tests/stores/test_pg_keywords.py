"""PgKeywordStore's own bookkeeping: the BM25 statistics it keeps on every write must equal a recount
from scratch (PostgreSQL's ts_stat), or scores drift as documents are replaced and deleted."""

from __future__ import annotations

import pytest

from fanrag.errors import ConfigError
from fanrag.stores.keywords_postgres import PgKeywordStore, parse_url
from fanrag.testing.stores import CORPUS, text_chunk
from fanrag.types import Chunk


def _recount_matches(store: PgKeywordStore) -> None:
    df = dict(store._db.query("SELECT lexeme, df FROM fanrag_keyword_df WHERE df <> 0"))
    truth = dict(store._db.query("SELECT word, ndoc FROM ts_stat('SELECT tsv FROM fanrag_keywords')"))
    assert df == truth
    n, total = store._db.query("SELECT n, total_dl FROM fanrag_keyword_stats")[0]
    assert (n, total) == tuple(store._db.query("SELECT count(*), coalesce(sum(dl), 0) FROM fanrag_keywords")[0])


def test_statistics_follow_adds_replacements_and_deletes(pg_database: str) -> None:
    store = PgKeywordStore(pg_database)
    try:
        store.add(CORPUS, titles={"d2": "Breast cancer genetics"})
        _recount_matches(store)
        store.add([text_chunk("d1", 0, "The athlete swims every evening in the lake."), CORPUS[1]])  # re-add one, add one
        _recount_matches(store)
        assert store.delete_documents(["d3"]) == 1
        _recount_matches(store)
        assert store.count() == 4  # the new d1 text is a new chunk id beside the old one
        swim = text_chunk("d1", 0, "The athlete swims every evening in the lake.")
        assert store.search("swimming lakes", 1)[0].chunk_id == swim.chunk_id
    finally:
        store.close()


def test_a_pool_as_large_as_the_matches_scores_exactly_like_no_pool(pg_database: str) -> None:
    every, big, small = (PgKeywordStore(f"{pg_database}?candidates={n}") for n in (0, 12, 2))
    try:
        docs = [Chunk.make(f"d{i}", 0, f"gene {'variant ' * (i % 3)}expression in tissue {i}", char_start=0,
                           char_end=1) for i in range(12)]
        every.add(docs)
        full = every.search("gene variant expression", 12)
        assert len(full) == 12 and full[0].score > full[-1].score
        assert big.search("gene variant expression", 12) == full
        few = small.search("gene variant expression", 12)  # BM25 over the 2 best by ts_rank only
        assert len(few) == 2 and {h.chunk_id for h in few} <= {h.chunk_id for h in full}
    finally:
        for store in (every, big, small):
            store.close()


def test_a_bad_candidates_parameter_names_the_setting() -> None:
    for url in ("postgresql://h/db?candidates=x", "postgresql://h/db?candidates=-1"):
        with pytest.raises(ConfigError, match="stores.keywords"):
            parse_url(url)
    assert parse_url("postgresql://h/db?candidates=50&sslmode=disable") == ("postgresql://h/db?sslmode=disable", 50)


def test_concurrent_writers_neither_deadlock_nor_skew_the_statistics(pg_database: str) -> None:
    """Writers replacing and deleting the same documents at once (several workers on one database)."""
    import threading

    stores = [PgKeywordStore(pg_database) for _ in range(4)]
    errors: list[BaseException] = []

    def churn(store: PgKeywordStore) -> None:
        try:
            for _ in range(8):
                store.delete_documents(["d1", "d2", "d3"])
                store.add(CORPUS, titles={"d2": "Breast cancer genetics"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert stores[0].count() == len(CORPUS)
        _recount_matches(stores[0])
    finally:
        for store in stores:
            store.close()
