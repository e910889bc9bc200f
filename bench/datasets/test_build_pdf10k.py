"""The pdf10k builder on three hand-written contexts (needs reportlab, like the builder).

Run: ``python -m pytest -q bench/datasets -p no:cacheprovider`` (outside ``tests/``: CI does not collect it).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("reportlab")
import build_pdf10k as b

ROWS = (("", "2019", "2018"),) + tuple((f"Segment {k} revenue", f"{1000 + k:,}", f"{900 + k:,}") for k in range(60))


def contexts() -> list[b.Context]:
    return [
        b.Context("ctx000", "t-long", ROWS, (("p-a", "Revenue grew by 12 % as the cloud business expanded."),)),
        b.Context("ctx001", "t-short", (("", "2019"), ("Cash and equivalents", "$ 512.3")),
                  (("p-b", "The company adopted the modified retrospective method in fiscal 2019."),)),
    ]


def test_render_places_rows_and_paragraphs_on_pages(tmp_path: Path) -> None:
    filing = b.Filing("01-test", "Test Holdings", tuple(contexts()), outline=True)
    placement = b.render(filing, tmp_path / "f.pdf")
    assert placement.pages >= 3  # cover + a 61-row table that breaks across a page
    pages = {page for placed in placement.rows.values() for page, _ in placed if placed}
    assert len(pages) >= 2
    continued = b.continued_pages(placement)
    assert any("t-long" in tables for tables in continued.values())
    # a row on the second page of the table: its evidence page is that page, not the table's first
    last = placement.rows["t-long#60"][0][0]
    info = {"answer": ["1,059"], "derivation": "", "gold_docs": ["t-long"]}
    assert b.evidence_pages(info, placement, {"t-long", "t-short"}) == [last]
    info = {"answer": ["the modified retrospective method"], "derivation": "", "gold_docs": ["p-b"]}
    assert b.evidence_pages(info, placement, {"t-long", "t-short"}) == [placement.paragraphs["p-b"][0][0]]


def test_numbers_match_whole_numbers_only() -> None:
    assert b._holds("Cash | $ 512.3 | 1,059", "512.3")
    assert not b._holds("Cash | $ 1,512.3", "512.3")
    assert not b._holds("Cash | 5123", "512")


def test_filings_are_deterministic() -> None:
    ctxs = [b.Context(f"ctx{k:03d}", f"t{k}", (("a", "1"),), ()) for k in range(40)]
    one = b.filings(ctxs, random.Random(7))
    two = b.filings(ctxs, random.Random(7))
    assert one == two and len(one) == b.N_FILINGS
    assert sorted(c.context_id for f in one for c in f.contexts) == [c.context_id for c in ctxs]
    assert [f.outline for f in one[:2]] == [True, False]


def test_build_writes_page_qrels(tmp_path: Path) -> None:
    src = tmp_path / "tatqa"
    src.mkdir()
    ctxs = contexts()
    corpus = [{"_id": c.table_id, "title": "", "text": "\n".join(" | ".join(r) for r in c.rows)} for c in ctxs]
    corpus += [{"_id": pid, "title": "", "text": text} for c in ctxs for pid, text in c.paragraphs]
    b._write_jsonl(src / "corpus.jsonl", corpus)
    b._write_jsonl(src / "contexts.jsonl", [{"context_id": c.context_id, "table_doc": c.table_id,
                                             "paragraph_docs": [p for p, _ in c.paragraphs]} for c in ctxs])
    b._write_jsonl(src / "queries.jsonl", [{"_id": "q1", "text": "What was the cash in 2019?"}])
    b._write_jsonl(src / "answers.jsonl", [{"_id": "q1", "context_id": "ctx001", "answer": ["512.3"],
                                            "answer_type": "span", "answer_from": "table", "scale": "",
                                            "derivation": "", "gold_docs": ["t-short"]}])
    manifest = b.build(src, tmp_path / "out", seed=1)
    assert manifest["questions"] == 1
    qrels = (tmp_path / "out" / "qrels" / "test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore"
    qid, corpus_id, score = qrels[1].split("\t")
    pdf, page = corpus_id.split("#page=")
    assert qid == "q1" and score == "1" and (tmp_path / "out" / "pdfs" / pdf).is_file() and int(page) >= 2
    [query] = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert query["text"].endswith(": What was the cash in 2019?") and query["metadata"]["filing"] == pdf
