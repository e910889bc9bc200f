"""Loaders on real files (the sample corpus and committed fixtures) and on the bad-input set."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from fanrag.errors import CorruptDocument, EmptyDocument, EncryptedDocument, LoadError, UnsupportedFormat
from fanrag.ids import content_hash, document_id, source_uri
from fanrag.ingest import loaders
from fanrag.ingest.loaders import Part
from fanrag.ingest.loaders.markdown import first_h1, split_front_matter
from fanrag.settings import IngestSettings
from fanrag.types import Document

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"
FIXTURES = ROOT / "tests" / "fixtures"
MANUAL = CORPUS / "gnuplot-5.4-manual.pdf"
THREE = FIXTURES / "three-pages.pdf"
PASSWORD = "fanrag-secret"  # the one make_fixtures.py encrypts with


def assert_load_error(exc_info: pytest.ExceptionInfo, cls: type[LoadError], path: Path, words: str) -> None:
    """The error class, the file as ``source``, a one-line reason that says ``words``."""
    err = exc_info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.source == str(path)
    assert "\n" not in err.reason
    assert words in err.reason
    assert str(path) in str(err)


# -- sniffing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("gnuplot-5.4-manual.pdf", "pdf"), ("python-asyncio-tasks.html", "html"),
    ("pip-repeatable-installs.md", "markdown"), ("python-sorting-howto.txt", "text"),
    ("python-socket-howto.docx", "docx"),
])
def test_sniff_corpus(name: str, fmt: str) -> None:
    assert loaders.sniff(CORPUS / name) == fmt


def test_sniff_content_wins_over_extension(tmp_path: Path) -> None:
    cases = {
        "really-a-pdf.txt": THREE.read_bytes(),
        "really-a-docx.bin": (FIXTURES / "checklist.docx").read_bytes(),
        "page.txt": b"<!DOCTYPE html><html><body><p>hi</p></body></html>",
        "entries.txt": b'{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n',
        "README": b"plain words\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    got = {name: loaders.sniff(tmp_path / name) for name in cases}
    assert got == {"really-a-pdf.txt": "pdf", "really-a-docx.bin": "docx", "page.txt": "html",
                   "entries.txt": "jsonl", "README": "text"}


def test_supported_extensions() -> None:
    assert {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".jsonl", ".txt"} <= loaders.SUPPORTED_EXTENSIONS


def test_get_loader_unknown() -> None:
    assert loaders.get_loader("pdf").splittable
    with pytest.raises(ValueError, match="unknown format"):
        loaders.get_loader("pptx")


def test_one_registry_entry_per_sniffed_format() -> None:
    assert list(loaders.LOADERS) == ["pdf", "docx", "html", "markdown", "jsonl", "text"]
    for fmt in loaders.LOADERS:
        loader = loaders.get_loader(fmt)
        assert loader.name == fmt and isinstance(loader.splittable, bool)
    assert [f for f in loaders.LOADERS if loaders.get_loader(f).splittable] == ["pdf", "jsonl"]


def test_load_dispatches_through_the_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loaders.LOADERS, "_entries", dict(loaders.LOADERS._entries))  # undone after the test
    loaders.LOADERS.add("markdown", f"{__name__}:ShoutingLoader")
    path = tmp_path / "notes.md"
    path.write_text("# Title\n\nquiet words\n")
    [doc] = loaders.load(path)
    assert doc.text == "# TITLE\n\nQUIET WORDS\n" and doc.uri == source_uri(path)


class ShoutingLoader:
    name = "markdown"
    splittable = False

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Part | None = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list:
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=content_hash(path.read_bytes()),
                         text=path.read_text().upper())]


# -- PDF -----------------------------------------------------------------------------------------------

def test_pdf_pages_offsets_and_ids() -> None:
    [doc] = loaders.load(THREE)
    assert [p.number for p in doc.pages] == [1, 2, 3]
    for page in doc.pages:
        assert doc.text[page.offset:page.offset + len(page.text)] == page.text
    assert doc.pages[1].text.startswith("Chapter 2. Merge points")
    assert doc.title == "three-pages"  # no Title in the PDF's metadata
    assert doc.mime == "application/pdf"
    assert doc.uri == doc.source == source_uri(THREE)
    assert doc.doc_id == document_id(doc.uri)
    assert doc.content_hash == content_hash(THREE.read_bytes())


def test_pdf_real_manual_title_and_units() -> None:
    assert loaders.units(MANUAL) == 311
    [doc] = loaders.load(MANUAL, part=Part(0, 2))
    assert doc.title == "gnuplot documentation"


def test_pdf_parts_merge_to_whole() -> None:
    [whole] = loaders.load(MANUAL)
    parts = [loaders.load(MANUAL, part=Part(s, min(s + 100, 311)))[0] for s in range(0, 311, 100)]
    second = parts[1]
    assert second.metadata == {"part": [100, 200], "n_pages_total": 311}
    assert second.pages[0].number == 101 and second.pages[0].offset == 0  # numbers absolute, offsets local
    assert second.text == "\n\n".join(p.text for p in whole.pages[100:200])
    # what the pipeline's assembler does: join part texts with the page separator, shift page offsets
    assert "\n\n".join(p.text for p in parts) == whole.text
    shift = 0
    for part in parts:
        assert [(p.number, p.offset + shift) for p in part.pages] == \
               [(p.number, p.offset) for p in whole.pages[part.metadata["part"][0]:part.metadata["part"][1]]]
        shift += len(part.text) + 2
    assert whole.metadata == {}


def test_pdf_part_out_of_range() -> None:
    with pytest.raises(LoadError) as ei:
        loaders.load(THREE, part=Part(2, 9))
    assert_load_error(ei, LoadError, THREE, "outside the 3 pages")


def test_pdf_encrypted() -> None:
    path = FIXTURES / "encrypted.pdf"
    with pytest.raises(EncryptedDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EncryptedDocument, path, "encrypted; pass a password")
    with pytest.raises(EncryptedDocument) as ei:
        loaders.load(path, password="not-it")
    assert_load_error(ei, EncryptedDocument, path, "wrong password")
    assert loaders.units(path, password=PASSWORD) == 3
    [doc] = loaders.load(path, password=PASSWORD)
    assert "Chapter 3. Page ranges" in doc.text


def test_pdf_truncated_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pdf"
    data = MANUAL.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, CorruptDocument, path, "not a readable PDF")


def test_pdf_extension_without_pdf_content_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("just some words, no PDF here\n")
    with pytest.raises(CorruptDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, CorruptDocument, path, "not a readable PDF")


def test_pdf_zero_pages_after_an_encrypted_one() -> None:
    # pdfium's error code is sticky: loading the encrypted file first must not make this one "encrypted".
    with pytest.raises(EncryptedDocument):
        loaders.load(FIXTURES / "encrypted.pdf")
    path = FIXTURES / "no-pages.pdf"
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "no pages")


def test_pdf_scanned_has_no_text_layer() -> None:
    path = FIXTURES / "scanned.pdf"
    assert loaders.units(path) == 2
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "no text layer (scanned PDF? OCR is not supported)")
    [part] = loaders.load(path, part=Part(0, 1))  # a part without text is not an error by itself
    assert part.text == "" and part.pages[0].number == 1


# -- HTML ----------------------------------------------------------------------------------------------

def test_html_real_page_drops_navigation() -> None:
    [doc] = loaders.load(CORPUS / "python-asyncio-tasks.html")
    assert doc.title == "Coroutines and Tasks — Python 3.11.2 documentation"
    assert doc.mime == "text/html"
    assert doc.text.startswith("Coroutines and Tasks\n\n")
    for junk in ("Previous topic", "This Page", "Report a Bug", "Navigation"):
        assert junk not in doc.text
    assert "\n\nRunning in Threads\n\n" in doc.text  # a heading is its own paragraph
    assert "\n    await asyncio.sleep(delay)\n" in doc.text  # <pre> keeps indentation
    assert "asyncio.create_task()" in doc.text
    assert "¶" not in doc.text  # Sphinx permalinks


def test_html_structure(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<!doctype html><html><head><title> My  page </title><style>p{color:red}</style></head><body>"
        "<header>Site banner</header><nav><a href='/'>Home</a></nav>"
        "<main><h1>Heading</h1><p>Some <b>bold</b> and<i> italic</i>\n   text.</p>"
        "<script>var x = 1;</script><ul><li>one</li><li>two</li></ul>"
        "<table><tr><td>a</td><td>b</td></tr></table><p>line<br>break</p></main>"
        "<footer>Copyright</footer></body></html>", encoding="utf-8")
    [doc] = loaders.load(path)
    assert doc.title == "My page"
    assert doc.text == "Heading\n\nSome bold and italic text.\n\none\ntwo\n\na | b\n\nline\nbreak"


def test_html_without_text_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.html"
    path.write_text("<html><body><nav>menu</nav><script>1</script></body></html>")
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "no text")


# -- Markdown, text, DOCX ------------------------------------------------------------------------------

def test_markdown_front_matter_and_title() -> None:
    [doc] = loaders.load(FIXTURES / "notes.md")
    assert doc.title == "Operating notes"
    assert doc.metadata["front_matter"] == {"title": "Operating notes", "tags": "  - ops\n  - ingest",
                                            "owner": "data team"}
    assert doc.text.startswith("Intro paragraph") and "# Restarting ingestion" in doc.text
    assert doc.mime == "text/markdown"


def test_markdown_real_title_is_first_h1() -> None:
    [doc] = loaders.load(CORPUS / "pip-repeatable-installs.md")
    assert doc.title == "Repeatable Installs"
    assert "## Pinning the package versions" in doc.text


def test_markdown_helpers() -> None:
    assert first_h1("```\n# comment\n```\nTitle\n=====\n\n# Later") == "Title"
    assert first_h1("no heading here") == ""
    assert split_front_matter("no front matter\n---\n") == ({}, "no front matter\n---\n")


def test_text_plain() -> None:
    path = CORPUS / "python-sorting-howto.txt"
    [doc] = loaders.load(path)
    assert doc.title == "python-sorting-howto"
    assert doc.text == path.read_text(encoding="utf-8")
    assert doc.mime == "text/plain" and doc.pages == ()


def test_text_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    assert loaders.load(path)[0].text == "line one\nline two\n"


def test_docx_paragraphs_tables_in_order() -> None:
    [doc] = loaders.load(FIXTURES / "checklist.docx")
    assert doc.title == "Release checklist"
    assert doc.text == ("Release checklist\n\nRun the full test suite before tagging a release.\n\nVersions\n\n"
                        "Component | Version\nfanrag | 0.1.0\ntantivy | 0.22\n\n"
                        "Publish the wheel only after the smoke test passes.")


def test_docx_real_corpus_file() -> None:
    [doc] = loaders.load(CORPUS / "python-socket-howto.docx")
    assert doc.title == "Socket Programming HOWTO"
    assert "non-blocking" in doc.text


def test_docx_title_falls_back_to_first_heading(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_paragraph("preface")
    d.add_heading("Real title", level=2)
    d.save(str(tmp_path / "x.docx"))
    assert loaders.load(tmp_path / "x.docx")[0].title == "Real title"


def test_zip_that_is_not_docx(tmp_path: Path) -> None:
    path = tmp_path / "archive.docx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(UnsupportedFormat) as ei:
        loaders.load(path)
    assert_load_error(ei, UnsupportedFormat, path, "not a DOCX")


# -- JSONL ---------------------------------------------------------------------------------------------

def test_jsonl_entries_and_bad_lines() -> None:
    path = FIXTURES / "collection.jsonl"
    docs = loaders.load(path)
    uri = source_uri(path)
    assert [d.metadata["external_id"] for d in docs] == ["a1", "a2", "a5"]
    first = docs[0]
    assert first.uri == f"{uri}#a1" and first.source == uri and first.doc_id == document_id(f"{uri}#a1")
    assert first.text == "Alpha\n\nThe first entry." and first.title == "Alpha"
    assert first.metadata == {"external_id": "a1", "year": 2020}
    assert docs[1].text == "An entry without a title." and docs[1].title == ""
    assert first.content_hash != docs[2].content_hash
    lines = [reason for _, reason in docs.errors]
    assert lines[0].startswith(f"{path}: line 4: invalid JSON")
    assert lines[1] == f"{path}: line 5: no 'text' string"
    assert [u for u, _ in docs.errors] == [f"{uri}#line4", f"{uri}#line5"]


def test_a_jsonl_id_with_a_lone_surrogate_fails_its_line_alone(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b'{"_id": "\\ud800", "text": "An id no URI can spell."}\n'
                     b'{"_id": "ok", "title": "Lone \\udc00", "text": "Text with a lone \\ud800 in it."}\n')
    docs = loaders.load(path)
    assert [d.metadata["external_id"] for d in docs] == ["ok"]
    [(uri, reason)] = docs.errors
    assert uri.endswith("#line1") and reason == f"{path}: line 1: '_id' '\\\\ud800' holds a lone surrogate (not valid Unicode)"


def test_jsonl_units_and_parts() -> None:
    path = FIXTURES / "collection.jsonl"
    assert loaders.units(path) == 6
    assert [d.metadata["external_id"] for d in loaders.load(path, part=Part(0, 2))] == ["a1", "a2"]
    tail = loaders.load(path, part=Part(3, 6))
    assert [d.metadata["external_id"] for d in tail] == ["a5"]
    assert [u.rsplit("#", 1)[1] for u, _ in tail.errors] == ["line4", "line5"]
    assert loaders.load(path, part=Part(2, 3)) == []  # a blank line


def test_jsonl_scifact_parts_equal_whole(scifact: Path) -> None:
    path = scifact / "corpus.jsonl"
    whole = loaders.load(path)
    assert len(whole) == 5183 and not whole.errors
    n = loaders.units(path)
    assert n == 5183
    pieces = [d.doc_id for s in range(0, n, 1000) for d in loaders.load(path, part=Part(s, min(s + 1000, n)))]
    assert pieces == [d.doc_id for d in whole]


def test_jsonl_all_bad_and_duplicates(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": 1, "text": 5}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(CorruptDocument) as ei:
        loaders.load(bad)
    assert_load_error(ei, CorruptDocument, bad, "no valid entry; line 1: 'text' is a int, not a string")
    assert "1 more bad lines" in ei.value.reason
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "x", "text": "a"}\n{"_id": "x", "text": "b"}\n', encoding="utf-8")
    docs = loaders.load(dup)
    assert [d.text for d in docs] == ["a"] and "repeats id 'x'" in docs.errors[0][1]


def test_jsonl_blank_only_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\n")
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "no entries")


# -- the bad-input set ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.html", "empty.pdf", "empty.jsonl"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "empty file")


def test_whitespace_only_text(tmp_path: Path) -> None:
    path = tmp_path / "spaces.txt"
    path.write_text(" \n\t\n")
    with pytest.raises(EmptyDocument) as ei:
        loaders.load(path)
    assert_load_error(ei, EmptyDocument, path, "whitespace only")


def test_binary_junk_with_text_extension(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_bytes(os.urandom(4096) + b"\x00")
    with pytest.raises(UnsupportedFormat) as ei:
        loaders.load(path)
    assert_load_error(ei, UnsupportedFormat, path, "binary content (not text)")


def test_invalid_utf8_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(UnsupportedFormat) as ei:
        loaders.load(path)
    assert_load_error(ei, UnsupportedFormat, path, "not valid UTF-8 (byte 0xe9 at offset 3)")


def test_html_declared_charset(tmp_path: Path) -> None:
    path = tmp_path / "legacy.html"
    path.write_bytes('<html><head><meta charset="windows-1252"><title>Caf\u00e9</title></head>'
                     '<body><p>cr\u00e8me br\u00fbl\u00e9e</p></body></html>'.encode("cp1252"))
    [doc] = loaders.load(path)
    assert (doc.title, doc.text) == ("Caf\u00e9", "cr\u00e8me br\u00fbl\u00e9e")


def test_utf16_is_named(tmp_path: Path) -> None:
    path = tmp_path / "wide.txt"
    path.write_bytes("hello".encode("utf-16"))
    with pytest.raises(UnsupportedFormat) as ei:
        loaders.load(path)
    assert_load_error(ei, UnsupportedFormat, path, "UTF-16")


@pytest.mark.parametrize("source", [THREE, FIXTURES / "checklist.docx", CORPUS / "pip-authentication.md",
                                    CORPUS / "python-asyncio-queues.html", CORPUS / "python-sorting-howto.txt",
                                    FIXTURES / "collection.jsonl"])
def test_file_vanishes_between_sniff_and_load(tmp_path: Path, source: Path) -> None:
    path = tmp_path / source.name
    shutil.copy(source, path)
    fmt = loaders.sniff(path)
    path.unlink()
    loader = loaders.get_loader(fmt)
    with pytest.raises(LoadError) as ei:
        loader.load(path, uri=source_uri(path))
    assert_load_error(ei, LoadError, path, "file vanished")
    with pytest.raises(LoadError) as ei:
        loaders.load(path)
    assert_load_error(ei, LoadError, path, "file vanished")


def test_part_of_a_file_that_does_not_split() -> None:
    path = CORPUS / "python-sorting-howto.txt"
    assert loaders.load(path, part=Part(0, 1))[0].text == path.read_text(encoding="utf-8")
    with pytest.raises(LoadError):
        loaders.load(path, part=Part(1, 2))


def test_results_and_errors_cross_process_boundaries() -> None:
    docs = loaders.load(FIXTURES / "collection.jsonl")
    back = pickle.loads(pickle.dumps(docs))
    assert back == docs and back.errors == docs.errors
    err = pickle.loads(pickle.dumps(EncryptedDocument("/x.pdf", "encrypted; pass a password")))
    assert (type(err), err.source, err.reason) == (EncryptedDocument, "/x.pdf", "encrypted; pass a password")


# -- structure: sections and tables (fixtures written by make_fixtures.make_structure, checked by hand) --

def assert_located(doc: Document) -> None:
    """Every section starts at its heading's line; every table's header is its first line(s) or was
    carried from the page before; both sorted by start and inside the text."""
    assert [s.start for s in doc.sections] == sorted(s.start for s in doc.sections)
    assert [t.start for t in doc.tables] == sorted(t.start for t in doc.tables)
    for t in doc.tables:
        assert 0 <= t.start < t.end <= len(doc.text) and doc.text[t.start:t.end].strip() == doc.text[t.start:t.end]
        assert t.header.strip()


def sections_of(doc: Document) -> list[tuple[int, str, str]]:
    """(level, title, the text at the section's start) of each section."""
    return [(s.level, s.title, doc.text[s.start:s.start + 12]) for s in doc.sections]


def table_rows(doc: Document) -> list[tuple[str, list[str]]]:
    return [(t.header, doc.text[t.start:t.end].split("\n")) for t in doc.tables]


def test_markdown_sections_and_pipe_table() -> None:
    [doc] = loaders.load(FIXTURES / "structure.md")
    assert doc.title == "Annual review"
    assert sections_of(doc) == [
        (1, "Annual review", "# Annual rev"),
        (1, "Results", "Results\n===="),  # setext; the '#' line inside the code fence is not a heading
        (2, "Revenue by segment", "## Revenue b"),  # closing '##' dropped
        (2, "Costs rose slightly", "Costs rose\ns"),  # a two-line setext heading over '---'
        (3, "Outlook", "### Outlook\n"),  # the indented '# ...' before it is code
    ]
    assert table_rows(doc) == [("| Segment | 2019 | 2018 |", [
        "| Segment | 2019 | 2018 |", "|:--------|-----:|-----:|", "| Cloud | 1,200 | 950 |", "| Devices | 430 | 470 |"])]
    assert_located(doc)


def test_html_sections_and_tables() -> None:
    [doc] = loaders.load(FIXTURES / "structure.html")
    assert doc.text == ("Annual review\n\nOpening words.\n\nRevenue by segment\n\nRevenue (in millions)\n\n"
                        "Segment | 2019 | 2018\nCloud | 1,200 | 950\nDevices | 430 | 470\n\nOutlook\n\nFlat.\n\n"
                        "Region | Staff\nNorth | 12\nSouth | 9")
    # the <h2> headings in <nav> and <footer> are dropped with them
    assert sections_of(doc) == [(1, "Annual review", "Annual revie"), (2, "Revenue by segment", "Revenue by s"),
                                (3, "Outlook", "Outlook\n\nFla")]
    assert table_rows(doc) == [
        ("Segment | 2019 | 2018", ["Segment | 2019 | 2018", "Cloud | 1,200 | 950", "Devices | 430 | 470"]),  # <thead>
        ("Region | Staff\nNorth | 12", ["Region | Staff", "North | 12", "South | 9"]),  # leading all-<th> rows
    ]
    assert_located(doc)


def test_html_table_without_header_cells_takes_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "t.html"
    path.write_text("<html><body><p>Before.</p><table><tr><td>Item</td><td>Cost</td></tr>"
                    "<tr><td>Tea</td><td>3</td></tr><tr><td></td><td></td></tr></table></body></html>")
    [doc] = loaders.load(path)
    assert doc.text == "Before.\n\nItem | Cost\nTea | 3"  # an empty row is left out
    assert table_rows(doc) == [("Item | Cost", ["Item | Cost", "Tea | 3"])]


def test_docx_heading_styles_and_tables() -> None:
    [doc] = loaders.load(FIXTURES / "structure.docx")
    assert doc.title == "Annual review"  # the Title paragraph names the document; it opens no section
    assert doc.text == ("Annual review\n\nOpening words.\n\nRevenue\n\nBy segment\n\n"
                        "Segment | 2019 | 2018\nCloud | 1,200 | 950\nDevices | 430 | 470\n\nOutlook\n\nFlat.")
    assert sections_of(doc) == [(1, "Revenue", "Revenue\n\nBy "), (2, "By segment", "By segment\n\n"),
                                (1, "Outlook", "Outlook\n\nFla")]
    assert table_rows(doc) == [("Segment | 2019 | 2018",
                                ["Segment | 2019 | 2018", "Cloud | 1,200 | 950", "Devices | 430 | 470"])]
    assert_located(doc)


def test_docx_custom_style_with_an_outline_level(tmp_path: Path) -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    d = docx.Document()
    style = d.styles.add_style("Chapter Title", WD_STYLE_TYPE.PARAGRAPH)
    level = OxmlElement("w:outlineLvl")
    level.set(qn("w:val"), "0")
    style.element.get_or_add_pPr().append(level)
    d.add_paragraph("Part one", style="Chapter Title")
    d.add_paragraph("Body text.")
    d.save(str(tmp_path / "c.docx"))
    [doc] = loaders.load(tmp_path / "c.docx")
    assert sections_of(doc) == [(1, "Part one", "Part one\n\nBo")]


REPORT_SECTIONS = [(1, "Item 7. Management's Discussion and Analysis", "Item 7. Mana"),
                   (2, "Results of Operations", "Results of O"),
                   (2, "Liquidity and Capital Resources", "Liquidity an")]
REPORT_HEADER = "(in millions) | 2019 | 2018"


@pytest.mark.parametrize("name", ["annual-report.pdf", "annual-report-plain.pdf"])
def test_pdf_sections_from_outline_or_type(name: str) -> None:
    # annual-report.pdf has bookmarks; annual-report-plain.pdf has none: its headings are read from the
    # bold 16 and 12 pt lines over 9.5 pt body text, the running header (7.5 pt, in the top margin) is not one.
    [doc] = loaders.load(FIXTURES / name)
    assert sections_of(doc) == REPORT_SECTIONS
    assert_located(doc)


@pytest.mark.parametrize("name", ["annual-report.pdf", "annual-report-plain.pdf"])
def test_pdf_table_rows_keep_their_header_across_the_page_break(name: str) -> None:
    [doc] = loaders.load(FIXTURES / name)
    (head1, rows1), (head2, rows2) = table_rows(doc)
    assert head1 == head2 == REPORT_HEADER
    assert rows1 == [REPORT_HEADER] + [f"Segment {k} revenue | {100 + 7 * k} | {90 + 5 * k}" for k in range(1, 9)]
    assert rows2 == [f"Segment {k} revenue | {100 + 7 * k} | {90 + 5 * k}" for k in range(9, 31)]
    first, second = doc.tables
    assert doc.pages[0].offset <= first.start and first.end <= doc.pages[0].offset + len(doc.pages[0].text)
    assert second.start == doc.pages[1].offset + doc.pages[1].text.index("Segment 9 revenue")
    assert "Page 2" not in doc.text[second.start:second.end]  # the running header and footer are not rows


@pytest.mark.parametrize("name", ["annual-report.pdf", "annual-report-plain.pdf"])
def test_pdf_part_opens_with_the_open_section_path_and_the_carried_header(name: str) -> None:
    [part] = loaders.load(FIXTURES / name, part=Part(1, 2))
    assert [(s.start, s.level, s.title) for s in part.sections] == [
        (0, 1, "Item 7. Management's Discussion and Analysis"), (0, 2, "Results of Operations"),
        (part.text.index("Liquidity"), 2, "Liquidity and Capital Resources")]
    [table] = part.tables
    assert table.header == REPORT_HEADER and part.text[table.start:].startswith("Segment 9 revenue")


def test_pdf_without_tables_keeps_pdfiums_spacing() -> None:
    from fanrag.ingest.loaders.pdf import PdfLoader

    class Plain(PdfLoader):
        tables = False

    [doc] = Plain().load(FIXTURES / "annual-report.pdf", uri="x")
    assert "Segment 1 revenue 107 95\n" in doc.text and doc.tables == ()
    assert sections_of(doc) == REPORT_SECTIONS


def test_pdf_real_manual_outline_sections() -> None:
    [doc] = loaders.load(MANUAL, part=Part(100, 102))
    assert doc.sections[0].start == 0 and doc.sections[0].level == 1  # the part's open path comes first
    assert all(s.level >= 1 and s.title for s in doc.sections)
    assert_located(doc)


def test_jsonl_and_text_have_no_structure() -> None:
    assert all(d.sections == () and d.tables == () for d in loaders.load(FIXTURES / "collection.jsonl"))
    [doc] = loaders.load(CORPUS / "python-sorting-howto.txt")
    assert doc.sections == () and doc.tables == ()
