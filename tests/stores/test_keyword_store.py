"""KeywordStore contract (every backend): BM25 ranking, English analysis, robust queries, deletes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fanrag.errors import StoreError
from fanrag.stores.base import KeywordStore
from fanrag.types import Chunk


def chunk(doc_id: str, position: int, text: str) -> Chunk:
    return Chunk.make(doc_id, position, text, char_start=0, char_end=len(text))


CORPUS = [
    chunk("d1", 0, "The athlete runs every morning along the river."),
    chunk("d1", 1, "Protein folding is studied with molecular dynamics."),
    chunk("d2", 0, "BRCA1 mutations increase the risk of breast cancer."),
    chunk("d3", 0, "Cats sleep most of the day; dogs bark at strangers."),
]


@pytest.fixture
def filled(open_keywords):
    store = open_keywords()
    store.add(CORPUS)
    return store


def test_is_a_keyword_store(open_keywords) -> None:
    assert isinstance(open_keywords(), KeywordStore)


def test_stemming_matches_other_word_forms(filled) -> None:
    assert filled.search("running", 3)[0].chunk_id == CORPUS[0].chunk_id
    assert filled.search("folded proteins", 3)[0].chunk_id == CORPUS[1].chunk_id


def test_stop_words_alone_match_nothing(filled) -> None:
    assert filled.search("the of and", 5) == []


def test_ranking_is_by_score_and_more_matches_rank_higher(filled) -> None:
    hits = filled.search("breast cancer risk dogs", 10)
    assert hits[0].chunk_id == CORPUS[2].chunk_id
    assert CORPUS[3].chunk_id in {h.chunk_id for h in hits}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("query", [
    '"unbalanced quote', "(paren", "a AND OR NOT b", "title:brca1", "field:[1 TO 2]", "brca1^2 ~3",
    "*", "\\", "-", "ünïcödé 日本語 ✓", "", "   ", "C++ && || !", "{}[]<>~^:", "x" * 500,
])
def test_arbitrary_query_text_never_raises(filled, query: str) -> None:
    hits = filled.search(query, 5)
    assert isinstance(hits, list)
    if query == "title:brca1":
        assert hits[0].chunk_id == CORPUS[2].chunk_id  # the colon is not field syntax


def test_titles_are_searchable(open_keywords) -> None:
    store = open_keywords()
    store.add([chunk("dt", 0, "Results were significant.")], titles={"dt": "Zebrafish regeneration"})
    assert store.search("zebrafish", 1)[0].chunk_id == chunk("dt", 0, "Results were significant.").chunk_id


def test_readd_is_idempotent(filled) -> None:
    filled.add(CORPUS[:2])
    assert filled.count() == len(CORPUS)
    assert len(filled.search("athlete", 10)) == 1


def test_delete_documents(filled) -> None:
    assert filled.delete_documents(["d1", "absent"]) == 2
    assert filled.delete_documents(["d1"]) == 0
    assert filled.count() == 2
    assert filled.search("running protein", 10) == []


def test_reader_sees_committed_adds(open_keywords) -> None:
    writer = open_keywords()
    writer.add(CORPUS[:1])
    reader = open_keywords(read_only=True)
    assert reader.count() == 1
    writer.add(CORPUS[1:])
    assert reader.search("brca1", 1)[0].chunk_id == CORPUS[2].chunk_id
    with pytest.raises(StoreError, match="read-only"):
        reader.add(CORPUS[:1])


SCIFACT = Path(os.environ.get("FANRAG_SCIFACT", Path(__file__).parents[3] / "shared" / "data" / "scifact"))


@pytest.mark.slow
@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason="SciFact not available")
def test_scifact_ndcg_at_10(open_keywords) -> None:
    """BM25 with title + text on BEIR SciFact: Anserini gets 0.679, the BEIR paper 0.665."""
    ranx = pytest.importorskip("ranx")
    store = open_keywords()
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    store.add([chunk(d["_id"], 0, d["text"]) for d in docs], titles={d["_id"]: d["title"] for d in docs})
    qrels: dict[str, dict[str, int]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, rel = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(rel)
    queries = {q["_id"]: q["text"] for q in map(json.loads, (SCIFACT / "queries.jsonl").open()) if q["_id"] in qrels}
    doc_of = {chunk(d["_id"], 0, d["text"]).chunk_id: d["_id"] for d in docs}
    run = {qid: {doc_of[h.chunk_id]: h.score for h in store.search(text, 100)} for qid, text in queries.items()}
    ndcg = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), "ndcg@10")
    assert ndcg >= 0.66
