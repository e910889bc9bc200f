"""Loaders on hostile input (issue 13, finding 6): every decompression and parse is bounded.

Each hostile file is generated here, small on disk and huge when inflated or parsed; each load must end
within a time bound and a memory bound (peak RSS sampled with psutil while it runs), with a one-line
LimitExceeded naming the file, what was found and the ``ingest.*`` setting to raise. The bounds are
generous (a busy 2-core machine): before the fixes these inputs took minutes and gigabytes.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from fanrag.errors import ConfigError, CorruptDocument, LimitExceeded, LoadError
from fanrag.ingest import loaders
from fanrag.settings import IngestSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import pdf_bytes, text_page

MIB = 1 << 20
FONTS = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"


@contextmanager
def bounded(seconds: float, mib: int) -> Iterator[None]:
    """Fail unless the block ends within ``seconds`` and raises the process's RSS by less than ``mib``
    at its peak (sampled every 5 ms in a thread)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        done.set()
        sampler.join()
    grew = (peak[0] - base) / MIB
    assert elapsed < seconds, f"took {elapsed:.1f} s (bound {seconds} s)"
    assert grew < mib, f"RSS grew {grew:.0f} MiB (bound {mib} MiB)"


def refused(path: Path, setting: str, **kw: object) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as ei:
        loaders.load(path, **kw)  # type: ignore[arg-type]
    err = ei.value
    assert err.source == str(path) and "\n" not in err.reason and f"ingest.{setting} = " in err.reason
    return err


# -- DOCX: zip bombs ------------------------------------------------------------------------------------

def docx_with(path: Path, document_xml_mib: int = 0, extra: dict[str, bytes] | None = None,
              n_entries: int = 0) -> Path:
    """A real DOCX (python-docx's template) whose document.xml is padded to ``document_xml_mib`` MiB of
    whitespace inside the body (inflating ~1000:1), plus ``extra`` entries and ``n_entries`` empty ones."""
    import docx

    template = path.with_suffix(".template.docx")
    d = docx.Document()
    d.add_paragraph("A small visible paragraph.")
    d.save(str(template))
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "word/document.xml" and document_xml_mib:
                head, tail = data.split(b"<w:body>", 1)
                with out.open(info.filename, "w", force_zip64=True) as f:
                    f.write(head + b"<w:body>")
                    for _ in range(document_xml_mib):
                        f.write(b" " * MIB)
                    f.write(tail)
            else:
                out.writestr(info, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
        for k in range(n_entries):
            out.writestr(f"customXml/item{k}.bin", b"")
    template.unlink()
    return path


def test_docx_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    path = docx_with(tmp_path / "bomb.docx", document_xml_mib=200)  # ~200 KB on disk
    assert path.stat().st_size < 1 * MIB
    with bounded(seconds=10, mib=64):
        err = refused(path, "max_xml_mb")
    assert "word/document.xml" in err.reason and "200.0 MiB" in err.reason


def test_docx_bomb_ratio_alone(tmp_path: Path) -> None:
    path = docx_with(tmp_path / "ratio.docx", document_xml_mib=8)  # under max_xml_mb, but 1000:1
    with bounded(seconds=10, mib=64):
        err = refused(path, "max_ratio")
    assert "word/document.xml inflates" in err.reason
    [doc] = loaders.load(path, limits=IngestSettings(max_ratio=2000))  # raised: it loads (it is a DOCX)
    assert doc.text == "A small visible paragraph."


def test_docx_total_unpacked_size(tmp_path: Path) -> None:
    import os

    path = docx_with(tmp_path / "media.docx", extra={"word/media/big.bin": os.urandom(3 * MIB)})
    refused(path, "max_unpacked_mb", limits=IngestSettings(max_unpacked_mb=2))
    assert loaders.load(path)[0].text == "A small visible paragraph."


def test_docx_entry_count_read_from_the_end_record(tmp_path: Path) -> None:
    path = docx_with(tmp_path / "many.docx", n_entries=60)
    limits = IngestSettings(max_zip_entries=50)
    err = refused(path, "max_zip_entries", limits=limits)
    assert "zip archive with 7" in err.reason  # python-docx's 10-odd parts + 60
    with pytest.raises(LimitExceeded):  # sniffing refuses it too, before zipfile reads the directory
        loaders.sniff(path, limits=limits)


def test_docx_directory_that_understates_an_entry_is_corrupt(tmp_path: Path) -> None:
    # The directory says document.xml is 200 bytes; its data inflates to 256 MiB. Inflated a chunk at a time,
    # the entry fails its CRC check just past the declared size: a corrupt file, never 256 MiB in memory
    # (ZipFile.read inflated it whole before cutting it: at 50 MiB this test sat just under its bound).
    path = docx_with(tmp_path / "liar.docx", document_xml_mib=256)
    data = bytearray(path.read_bytes())
    name = b"word/document.xml"
    at = data.rfind(b"PK\x01\x02", 0, data.rindex(name))  # its directory entry (the directory comes last)
    _patch_sizes(data, at, name)
    path.write_bytes(bytes(data))
    with bounded(seconds=10, mib=64), pytest.raises(CorruptDocument) as ei:
        loaders.load(path)
    assert "not a readable DOCX" in ei.value.reason


def _patch_sizes(data: bytearray, central: int, name: bytes) -> None:
    """Set the uncompressed size of ``name`` to 200 in its local header and its directory entry (and in
    their zip64 extra fields, where the real sizes were stored)."""
    struct.pack_into("<I", data, central + 24, 200)
    local = struct.unpack_from("<I", data, central + 42)[0]
    struct.pack_into("<I", data, local + 22, 200)
    for header, name_at in ((central, central + 46), (local, local + 30)):
        name_len = struct.unpack_from("<H", data, header + (28 if header == central else 26))[0]
        extra_len = struct.unpack_from("<H", data, header + (30 if header == central else 28))[0]
        extra = name_at + name_len
        pos = extra
        while pos < extra + extra_len:
            tag, size = struct.unpack_from("<HH", data, pos)
            if tag == 1 and size >= 8:  # zip64: uncompressed size first
                struct.pack_into("<Q", data, pos + 4, 200)
            pos += 4 + size


# -- PDF ------------------------------------------------------------------------------------------------

def test_pdf_lying_page_count_is_clamped_quickly(tmp_path: Path) -> None:
    data = pdf_bytes([text_page(["the only real page"])], FONTS).replace(b"/Count 1 ", b"/Count 1048000 ")
    path = tmp_path / "liar.pdf"
    path.write_bytes(data)
    assert len(data) < 700
    with bounded(seconds=5, mib=64):
        assert loaders.units(path) == 1
        [doc] = loaders.load(path)
    assert doc.text == "the only real page" and [p.number for p in doc.pages] == [1]


def test_pdf_page_tree_lying_in_the_middle(tmp_path: Path) -> None:
    data = pdf_bytes([text_page([f"page {k}"]) for k in range(5)], FONTS).replace(b"/Count 5 ", b"/Count 700 ")
    path = tmp_path / "liar5.pdf"
    path.write_bytes(data)
    assert loaders.units(path) == 5
    assert [p.text for p in loaders.load(path)[0].pages] == [f"page {k}" for k in range(5)]


def test_pdf_more_pages_than_max_pages(tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(pdf_bytes([text_page([f"page {k}"]) for k in range(30)], FONTS))
    limits = IngestSettings(max_pages=10)
    with pytest.raises(LimitExceeded) as ei:
        loaders.units(path, limits=limits)
    assert ei.value.reason == "30 pages (ingest.max_pages = 10)"
    refused(path, "max_pages", limits=limits)
    assert loaders.units(path) == 30


def flate_bomb_pdf(path: Path, mib: int) -> Path:
    """One page whose content stream is a text operator followed by ``mib`` MiB of spaces (~1000:1)."""
    deflate = zlib.compressobj(9)
    body = deflate.compress(b"BT /F1 12 Tf 72 720 Td (hello bomb) Tj ET\n")
    for _ in range(mib):
        body += deflate.compress(b" " * MIB)
    body += deflate.flush()
    data = pdf_bytes([body], FONTS).replace(b"<< /Length %d >>" % len(body),
                                            b"<< /Length %d /Filter /FlateDecode >>" % len(body))
    path.write_bytes(data)
    return path


def test_pdf_flate_bomb_is_refused_before_pdfium_inflates_it(tmp_path: Path) -> None:
    path = flate_bomb_pdf(tmp_path / "bomb.pdf", 300)  # 300 KB on disk; pdfium held 2x the stream
    with bounded(seconds=15, mib=64):
        with pytest.raises(LimitExceeded) as ei:
            loaders.units(path)
        assert "inflates past 64.0 MiB" in ei.value.reason and "ingest.max_stream_mb = 64" in ei.value.reason
        refused(path, "max_stream_mb")


def test_pdf_stream_ratio(tmp_path: Path) -> None:
    path = flate_bomb_pdf(tmp_path / "ratio.pdf", 4)  # 4 MiB: under max_stream_mb, but ~1000:1
    refused(path, "max_ratio")
    [doc] = loaders.load(path, limits=IngestSettings(max_ratio=5000))
    assert doc.text == "hello bomb"


def test_pdf_ordinary_compressed_streams_pass(tmp_path: Path) -> None:
    # The real manual: 424 Flate streams (fonts, content, object streams), none near a bound.
    assert loaders.units(ROOT / "examples" / "corpus" / "gnuplot-5.4-manual.pdf") == 311


# -- HTML -----------------------------------------------------------------------------------------------

def test_html_deep_nesting_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "deep.html"
    n = 100_000  # lexbor took 45 s on this
    path.write_text("<html><body>" + "<div>" * n + "deep" + "</div>" * n + "</body></html>")
    with bounded(seconds=5, mib=64):
        err = refused(path, "max_html_depth")
    assert "nested more than 512 deep" in err.reason


def test_html_ordinary_nesting_and_unclosed_tags_pass(tmp_path: Path) -> None:
    # 300 levels of real nesting, and 5,000 paragraphs and list items whose end tags are implied.
    path = tmp_path / "ok.html"
    path.write_text("<html><body>" + "<div>" * 300 + "<ul>" + "<li><p>item" * 5000 + "</ul>" + "</div>" * 300
                    + "<br><img src=x><script>var s = '<div><div><div>';</script></body></html>")
    [doc] = loaders.load(path)
    assert doc.text.count("item") == 5000


def test_html_size(tmp_path: Path) -> None:
    path = tmp_path / "big.html"
    path.write_text("<html><body>" + "<p>words and more words</p>" * 80_000 + "</body></html>")
    err = refused(path, "max_html_mb", limits=IngestSettings(max_html_mb=1))
    assert "HTML page of 2.1 MiB" in err.reason


# -- JSONL ----------------------------------------------------------------------------------------------

def test_jsonl_long_line_is_a_bad_line_not_a_memory_spike(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"_id": "a", "text": "first"}\n')
        f.write('{"_id": "huge", "text": "' + "x" * (40 * MIB) + '"}\n')
        f.write('{"_id": "b", "text": "last"}\n')
    with bounded(seconds=10, mib=24):
        docs = loaders.load(path, limits=IngestSettings(max_line_mb=1))
    assert [d.metadata["external_id"] for d in docs] == ["a", "b"]
    [(uri, reason)] = docs.errors
    assert uri.endswith("#line2") and reason == f"{path}: line 2: longer than 1 MiB (ingest.max_line_mb = 1)"


def test_jsonl_deeply_nested_line(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    path.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "x", "metadata": '
                    + "[" * 200_000 + "]" * 200_000 + "}\n")
    docs = loaders.load(path)
    assert [d.metadata["external_id"] for d in docs] == ["a"]
    assert docs.errors[0][1].endswith("line 2: JSON nested too deeply to parse")


# -- text without whitespace ----------------------------------------------------------------------------

def test_text_without_whitespace_is_cut_into_bounded_chunks(tmp_path: Path) -> None:
    from fanrag.embed.base import TokenizerSpec, load_tokenizer
    from fanrag.ingest.chunker import chunk_document

    path = tmp_path / "word.txt"
    path.write_text("x" * MIB)
    tokenizer = load_tokenizer(TokenizerSpec(kind="hf", path=str(ROOT / "src/fanrag/embed/data/all-MiniLM-L6-v2"
                                                                  "/tokenizer.json"), max_tokens=254))
    with bounded(seconds=30, mib=400):
        [doc] = loaders.load(path)
        chunks = chunk_document(doc, tokenizer, size=256, overlap=32, min_size=16)
    assert max(len(c.text) for c in chunks) <= 64 * 256  # far above any real chunk of 256 tokens


# -- settings -------------------------------------------------------------------------------------------

def test_ingest_settings_defaults_and_errors() -> None:
    s = Settings.load(home="/nonexistent-home", env={"FANRAG_INGEST__MAX_PAGES": "500"})
    assert s.ingest.max_pages == 500 and s.ingest.max_stream_mb == 64 and s.ingest.max_html_depth == 512
    with pytest.raises(ConfigError) as ei:
        Settings.load(home="/nonexistent-home", env={"FANRAG_INGEST__MAX_RATIO": "1"})
    assert ei.value.field == "ingest.max_ratio"


def test_limit_errors_pickle_with_their_reason(tmp_path: Path) -> None:
    import pickle

    err = LimitExceeded("/x.pdf", "30 pages (ingest.max_pages = 10)")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, LimitExceeded) and isinstance(back, LoadError) and str(back) == str(err)


def test_no_bound_trips_on_the_sample_corpus() -> None:
    corpus = ROOT / "examples" / "corpus"
    for path in sorted(corpus.iterdir()):
        if path.suffix in {".pdf", ".docx", ".html", ".md", ".txt", ".jsonl"}:
            assert loaders.load(path), path
