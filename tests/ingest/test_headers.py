"""Chunk headers: title › section path · page, a cut table's column names, and the token budget."""

from __future__ import annotations

from pathlib import Path

import pytest

import fanrag.embed
from fanrag.embed.base import TokenizerSpec, load_tokenizer
from fanrag.ingest.chunker import chunk_document
from fanrag.ingest.headers import compose, fit, section_path
from fanrag.types import Document, Page, Section, Table

TOKENIZER = load_tokenizer(TokenizerSpec(
    kind="hf", path=str(Path(fanrag.embed.__file__).parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"),
    max_tokens=256))


def doc(text: str, **kw: object) -> Document:
    return Document("d1", "file:///r.md", "file:///r.md", "h", text, **kw)  # type: ignore[arg-type]


def test_section_path_closes_deeper_levels() -> None:
    secs = [Section(0, 1, "Guide"), Section(10, 2, "Install"), Section(20, 3, "Linux"), Section(30, 2, "Use")]
    starts = [s.start for s in secs]
    assert section_path(secs, starts, 5) == ["Guide"]
    assert section_path(secs, starts, 25) == ["Guide", "Install", "Linux"]
    assert section_path(secs, starts, 35) == ["Guide", "Use"]  # a level-2 heading closes Install and Linux


def test_compose_by_hand() -> None:
    assert compose("Report", ["Report", "Results"], 3) == "Report › Results · page 3"  # title not repeated
    assert compose("", ["A", "B"], 0, "Year | 2019") == "A › B\nYear | 2019"
    assert compose("  ", [], 0) == ""


def test_fit_drops_middle_levels_then_the_tail() -> None:
    long = compose("Title", ["One two three four five", "Six seven eight nine ten", "Leaf"], 12)
    once = fit(long, TOKENIZER, 12)  # the outermost middle level goes first
    assert once == "Title › Six seven eight nine ten › Leaf · page 12" and TOKENIZER.count(once) <= 12
    cut = fit(long, TOKENIZER, 8)
    assert cut == "Title › Leaf · page 12"
    tiny = fit("Alpha beta gamma delta epsilon zeta eta theta", TOKENIZER, 3)
    assert TOKENIZER.count(tiny) <= 3 and tiny.startswith("Alpha")


def test_chunks_carry_their_context_and_still_fit() -> None:
    body = "The quick brown fox jumps over the lazy dog. " * 60
    text = f"Intro.\n\n{body}\n\nYear | 2019 | 2018\n" + "Revenue | 10 | 9\n" * 150
    table_start = text.index("Year |")
    d = doc(text, title="Annual Report", sections=(Section(8, 1, "Results"),),
            tables=(Table(table_start, len(text), "Year | 2019 | 2018"),))
    chunks = chunk_document(d, TOKENIZER, size=128, overlap=16, min_size=8, header_tokens=24)
    assert chunks[0].header == "Annual Report"
    assert all(c.header.startswith("Annual Report › Results") for c in chunks[1:])
    rows_only = [c for c in chunks if c.char_start > table_start]
    assert rows_only and all(c.header.endswith("\nYear | 2019 | 2018") for c in rows_only)
    assert all(TOKENIZER.count(c.indexed_text) <= 128 + 1 for c in chunks)  # +1: the joining newline
    assert all(c.text == text[c.char_start:c.char_end] for c in chunks)  # the text stays the document's


def test_a_table_continued_from_an_earlier_page_gives_every_chunk_its_header() -> None:
    rows = "Revenue | 10 | 9\n" * 150  # the page opens mid-table: the header line is not in this text
    d = doc(rows, title="R", tables=(Table(0, len(rows), "Year | 2019 | 2018"),))
    chunks = chunk_document(d, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=24)
    assert len(chunks) > 1 and all(c.header.endswith("\nYear | 2019 | 2018") for c in chunks)


def test_pages_and_no_headers() -> None:
    pages = (Page(1, "First page text. " * 40, 0), Page(2, "Second page text. " * 40, 0))
    text = pages[0].text + "\n\n" + pages[1].text
    d = doc(text, pages=(pages[0], Page(2, pages[1].text, len(pages[0].text) + 2)))
    chunks = chunk_document(d, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=16)
    assert chunks[0].header == "page 1" and chunks[-1].header == "page 2"
    plain = chunk_document(d, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=0)
    assert all(c.header == "" and c.indexed_text == c.text for c in plain)
    bare = chunk_document(doc("no context here " * 10), TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=16)
    assert all(c.header == "" for c in bare)


@pytest.mark.parametrize("header_tokens", [0, 32])
def test_a_title_only_document_keeps_its_chunk_ids(header_tokens: int) -> None:
    # the header is not part of the chunk id: a changed title re-embeds, it does not rename chunks
    d = doc("Short text.", title="T")
    (c,) = chunk_document(d, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=header_tokens)
    (plain,) = chunk_document(doc("Short text."), TOKENIZER, size=64, overlap=8, min_size=8)
    assert c.chunk_id == plain.chunk_id


def test_a_chunk_that_opens_with_the_title_is_not_given_it_again() -> None:
    body = "Aspirin and the heart\n\n" + "Low doses of aspirin reduce the risk of a second heart attack. " * 30
    d = doc(body, title="Aspirin  and the HEART")  # as a JSONL record's body opens: whitespace and case aside
    chunks = chunk_document(d, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=24)
    assert len(chunks) > 1 and chunks[0].header == "" and chunks[0].indexed_text == chunks[0].text
    assert all(c.header == "Aspirin and the HEART" for c in chunks[1:])  # the later ones lost it: they get it
    md = doc("# Aspirin and the heart\n\nShort.", title="Aspirin and the heart", sections=(Section(0, 1, "Aspirin and the heart"),))
    (c,) = chunk_document(md, TOKENIZER, size=64, overlap=8, min_size=8, header_tokens=24)
    assert c.header == ""
    assert compose("Report", ["Report", "Results"], 3, title_in_text=True) == "Results · page 3"
