"""Filters end to end on the server backends: metadata and BM25 in PostgreSQL, vectors in pgvector
(a real PostgreSQL 18 with pgvector, started by tests/servers/postgres.py)."""

from __future__ import annotations

import json
from pathlib import Path

from fanrag.engine import Engine
from tests.conftest import make_settings
from tests.servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures

RECORDS = [
    {"_id": f"r{i}", "title": f"Volcano report {i}", "text": f"Volcanic ash from Mount Etna grounded flights {i}.",
     "metadata": {"year": 2000 + i, "tags": ["volcano"] + (["aviation"] if i % 2 else [])}}
    for i in range(8)
]


def test_a_filter_on_postgres_pgvector_and_postgres_bm25(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (corpus / "aspirin.txt").write_text("Aspirin reduces inflammation; volcanic ash does not.")
    settings = make_settings(tmp_path / "home", stores={
        "meta": pg_database, "keywords": pg_database, "vectors": "pgvector" + pg_database.removeprefix("postgresql")})
    with Engine.open(settings=settings) as engine:
        assert engine.ingest([corpus]).ok == len(RECORDS) + 1
    with Engine.open(settings=settings, mode="read") as engine:
        assert type(engine.stores.keywords).__name__ == "PgKeywordStore"
        res = engine.retrieve("volcanic ash grounded flights", filter="year >= 2004 and tags = aviation")
        assert sorted(h.metadata["uri"].rsplit("#", 1)[1] for h in res.hits) == ["r5", "r7"]
        kinds = {rl.kind for rl in res.lists if rl.hits}
        assert {"dense", "bm25"} <= kinds
        res = engine.retrieve("volcanic ash", k=1, filter="source:**/aspirin.txt")
        assert [Path(h.source).name for h in res.hits] == ["aspirin.txt"]
        assert engine.retrieve("volcanic ash", filter={"year": 1999}).hits == []
