"""The shipped KeywordStore contract on every backend (tantivy, PostgreSQL), and BM25 quality on SciFact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fanrag.testing.stores import KeywordStoreContract, text_chunk


class TestKeywordStoreContract(KeywordStoreContract):
    """Run against tantivy and PostgreSQL (see conftest.py)."""


SCIFACT = Path(os.environ.get("FANRAG_SCIFACT", Path(__file__).parents[3] / "shared" / "data" / "scifact"))


@pytest.mark.slow
@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason="SciFact not available")
def test_scifact_ndcg_at_10(open_keywords) -> None:
    """BM25 with title + text on BEIR SciFact: Anserini gets 0.679, the BEIR paper 0.665."""
    ranx = pytest.importorskip("ranx")
    store = open_keywords()
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    store.add([text_chunk(d["_id"], 0, d["text"]) for d in docs], titles={d["_id"]: d["title"] for d in docs})
    qrels: dict[str, dict[str, int]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, rel = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(rel)
    queries = {q["_id"]: q["text"] for q in map(json.loads, (SCIFACT / "queries.jsonl").open()) if q["_id"] in qrels}
    doc_of = {text_chunk(d["_id"], 0, d["text"]).chunk_id: d["_id"] for d in docs}
    run = {qid: {doc_of[h.chunk_id]: h.score for h in store.search(text, 100)} for qid, text in queries.items()}
    ndcg = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), "ndcg@10")
    assert ndcg >= 0.66
