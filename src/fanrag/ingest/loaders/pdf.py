"""PDF with pypdfium2, page by page. Pages are opened and closed one at a time so memory stays flat
on a 2,000-page manual; a page range (``Part``) is loaded without touching the other pages.

Structure (``pdf_layout`` reads each page's lines, fonts and cell gaps): Sections come from the document
outline (bookmarks), each placed at the line on its page that carries its title (else at the page's
start); a PDF without an outline gets its headings from bold or larger lines. Tables are runs of lines
split into cells by wide gaps, their rows re-joined with " | "; a table that goes on over a page break
keeps its header on the next page. A part starts with the section path that is open where it starts
(Sections at offset 0) and a table continued from the page before it keeps that page's header, so
chunks cut from a part carry the same context as chunks of the whole document.

Bounds, checked before pdfium opens the file: every Flate stream (except images, which text extraction
never decodes) is inflated in steps, counted and dropped, and one that decodes past
``ingest.max_stream_mb`` or ``max_ratio`` refuses the file (pdfium would hold it whole: a 1 MB PDF
inflating to 1 GB took 2 GB of memory). The page count pdfium reports comes from the page tree's
``/Count``, which a file can state freely (a 566-byte file claiming 1,048,000 pages): the last page must
load, else the real count is found by bisection; more than ``ingest.max_pages`` real pages is refused.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CorruptDocument, EmptyDocument, EncryptedDocument, LoadError
from ...ids import document_id
from ...types import Document, Page, Section, Table
from ._common import hash_file, os_errors
from .base import Part
from .limits import MIB, check_ratio, exceeded, inflated_size, resolve, size
from .pdf_layout import PageText, read_page

if TYPE_CHECKING:
    import pypdfium2

    from ...settings import IngestSettings

PAGE_SEP = "\n\n"
_PASSWORD_ERROR = 4  # FPDF_ERR_PASSWORD
_NO_TEXT = "no text layer (scanned PDF? OCR is not supported)"
_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")
_FLATE_FIRST = re.compile(rb"/Filter\s*(?:\[\s*)?/(?:FlateDecode|Fl)\b")
_DICT_LOOKBACK = 4096
_MAX_OUTLINE = 50_000  # bookmarks read (a hostile outline can be huge; pypdfium2 already stops cycles)
_LOOKBACK_PAGES = 8  # without an outline, pages before a part searched for the headings open at its start


class PdfLoader:
    name = "pdf"
    splittable = True
    tables = True  # rows of tables re-joined with " | " (False: pdfium's text as it is, single spaces)

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        limits = resolve(limits)
        check_streams(path, limits)
        pdf = _open(path, password)
        try:
            return page_count(pdf, path, limits)
        finally:
            pdf.close()

    def load(self, path: Path, *, uri: str, part: Part | None = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list[Document]:
        limits = resolve(limits)
        if part is None:  # a part's file was checked when ``units`` planned it
            check_streams(path, limits)
        pdf = _open(path, password)
        try:
            total = page_count(pdf, path, limits)
            if total == 0:
                raise EmptyDocument(str(path), "PDF has no pages")
            start, stop = (0, total) if part is None else _check_part(path, part, total)
            pages, found = _read_pages(pdf, path, start, stop, self.tables)
            sections = _sections(pdf, path, pages, found, start)
            title = _title(pdf, path)
        finally:
            pdf.close()
        text = PAGE_SEP.join(p.text for p in pages)
        # A whole document without text is refused; a part without text (a run of figure pages) is not:
        # the rest of the document may well have text.
        if (part is None or (start, stop) == (0, total)) and not text.strip():
            raise EmptyDocument(str(path), _NO_TEXT)
        # Only a part says where it sits; a whole document needs no bookkeeping (and merged parts drop it).
        metadata: dict[str, Any] = {} if part is None else {"part": [start, stop], "n_pages_total": total}
        tables = tuple(Table(t.start + p.offset, t.end + p.offset, t.header) for p, f in zip(pages, found)
                       for t in f.tables)
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=title, mime="application/pdf", pages=tuple(pages),
                         metadata=metadata, sections=sections, tables=tables)]


# -- bounds ---------------------------------------------------------------------------------------------

def check_streams(path: Path, limits: IngestSettings) -> None:
    """Refuse a file with a Flate stream that inflates past ``max_stream_mb`` or ``max_ratio``."""
    cap = limits.max_stream_mb * MIB
    with os_errors(path), open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for number, (begin, end) in enumerate(_flate_streams(data), start=1):
                decoded = inflated_size(memoryview(data)[begin:end], cap)
                if decoded is None:
                    continue  # not zlib (encrypted, damaged): pdfium judges it
                what = f"stream {number} (at byte {begin:,})"
                if decoded > cap:
                    raise exceeded(path, f"{what} inflates past {size(cap)}", "max_stream_mb",
                                   limits.max_stream_mb, " MiB")
                check_ratio(path, what, decoded, end - begin, limits)


def _flate_streams(data: Any) -> Iterator[tuple[int, int]]:
    """[begin, end) of the data of each Flate stream that is not an image."""
    for m in _STREAM.finditer(data):
        head = bytes(data[max(0, m.start() - _DICT_LOOKBACK):m.start()])
        head = head[head.rfind(b"obj") + 1:] if b"obj" in head else head
        if not _FLATE_FIRST.search(head) or b"/Image" in head:
            continue
        begin = m.end()
        length = _LENGTH.search(head)
        end = begin + int(length.group(1)) if length else -1
        if not begin <= end <= len(data):
            end = data.find(b"endstream", begin)
        yield begin, (end if end >= 0 else len(data))


def page_count(pdf: pypdfium2.PdfDocument, path: Path, limits: IngestSettings) -> int:
    """Pages that really load: the page tree's claim, checked on its last page, else bisected."""
    claimed = len(pdf)
    real = claimed if claimed == 0 or _loads(pdf, claimed - 1) else _last_loading(pdf, claimed) + 1
    if real > limits.max_pages:
        raise exceeded(path, f"{real:,} pages", "max_pages", limits.max_pages)
    return real


def _loads(pdf: pypdfium2.PdfDocument, index: int) -> bool:
    import pypdfium2 as pdfium

    try:
        pdf[index].close()
    except pdfium.PdfiumError:
        return False
    return True


def _last_loading(pdf: pypdfium2.PdfDocument, claimed: int) -> int:
    """The last index that loads when the last claimed one does not (-1: none), by bisection: a page
    tree that lies about its count holds its real pages first."""
    lo, hi = -1, claimed - 1  # lo loads (or is -1), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _loads(pdf, mid) else (lo, mid)
    return lo


def _open(path: Path, password: str | None) -> pypdfium2.PdfDocument:
    import pypdfium2 as pdfium

    with os_errors(path):
        if not path.exists():
            raise FileNotFoundError(path)
        try:
            return pdfium.PdfDocument(str(path), password=password)
        except pdfium.PdfiumError as exc:
            raise _diagnose(path, exc, password) from exc


def _diagnose(path: Path, exc: Exception, password: str | None) -> LoadError:
    """Why pdfium refused a file. Its error code alone is not trusted: FPDF_GetLastError is sticky
    (a 0-page PDF fails with the code of the previous failure in the process, or "Success"), so the
    file's own trailer is checked for /Encrypt and the page tree for /Count 0."""
    head, tail = _ends(path)
    code = getattr(exc, "err_code", None)
    if code == _PASSWORD_ERROR and (b"/Encrypt" in head or b"/Encrypt" in tail):
        reason = "encrypted; pass a password" if password is None else "encrypted; wrong password"
        return EncryptedDocument(str(path), reason)
    data = head + tail
    if re.search(rb"/Count\s+0\b", data) and not re.search(rb"/Count\s+[1-9]", data):
        return EmptyDocument(str(path), "PDF has no pages")
    detail = _pdfium_reason(exc) if code not in (0, _PASSWORD_ERROR) else "unreadable structure"
    return CorruptDocument(str(path), f"not a readable PDF ({detail})")


def _ends(path: Path, n: int = 1 << 16) -> tuple[bytes, bytes]:
    with os_errors(path), open(path, "rb") as f:
        head = f.read(n)
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(len(head), size - n))
        return head, f.read()


def _pdfium_reason(exc: Exception) -> str:
    msg = str(exc)
    # "Failed to load document (PDFium: Data format error)." -> "Data format error"
    return msg.split("PDFium:", 1)[-1].strip(" ).") if "PDFium:" in msg else msg.splitlines()[0]


def _check_part(path: Path, part: Part, total: int) -> tuple[int, int]:
    if not 0 <= part.start < part.stop <= total:
        raise LoadError(str(path), f"page range [{part.start}, {part.stop}) outside the {total} pages")
    return part.start, part.stop


def _read_pages(pdf: pypdfium2.PdfDocument, path: Path, start: int, stop: int,
                tables: bool = True) -> tuple[list[Page], list[PageText]]:
    """Pages [start, stop) with absolute numbers and offsets local to the range, and what each holds."""
    pages: list[Page] = []
    found: list[PageText] = []
    # A table running off the page before the range goes on at the range's start with that header.
    carried = _read_page(pdf, path, start - 1, tables).open_table if start > 0 and tables else ""
    offset = 0
    for i in range(start, stop):
        page = _read_page(pdf, path, i, tables, carried)
        carried = page.open_table
        pages.append(Page(number=i + 1, text=page.text, offset=offset))
        found.append(page)
        offset += len(page.text) + len(PAGE_SEP)
    return pages, found


def _read_page(pdf: pypdfium2.PdfDocument, path: Path, index: int, tables: bool, carried: str = "") -> PageText:
    import pypdfium2 as pdfium

    try:
        page = pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                return read_page(textpage, page.get_height(), tables, carried)
            finally:
                textpage.close()
        finally:
            page.close()
    except pdfium.PdfiumError as exc:
        raise CorruptDocument(str(path), f"page {index + 1} is unreadable ({_pdfium_reason(exc)})") from exc


# -- sections -------------------------------------------------------------------------------------------

def _sections(pdf: pypdfium2.PdfDocument, path: Path, pages: list[Page], found: list[PageText],
              start: int) -> tuple[Section, ...]:
    """The outline's entries placed in the text, else the headings found on the pages; both preceded
    (for a part) by the path that is open where the part starts."""
    outline = _outline(pdf)
    if outline:
        return _outline_sections(outline, pages, found, start)
    before = [h for i in range(max(0, start - _LOOKBACK_PAGES), start)
              for h in _read_page(pdf, path, i, True).headings]
    here = [Section(h.start + page.offset, h.level, h.title) for page, f in zip(pages, found) for h in f.headings]
    return tuple(open_path((h.level, h.title) for h in before)) + tuple(here)


def _outline(pdf: pypdfium2.PdfDocument) -> list[tuple[int, int, str, float | None]]:
    """(page index, level from 1, title, y of the destination or None) of each bookmark with a page."""
    import pypdfium2 as pdfium

    items = []
    try:
        for mark in islice(pdf.get_toc(), _MAX_OUTLINE):
            title = " ".join((mark.get_title() or "").split())
            dest = mark.get_dest()
            index = dest.get_index() if dest is not None else None
            if index is None or not title:
                continue
            items.append((index, mark.level + 1, title, _dest_y(*dest.get_view())))
    except (pdfium.PdfiumError, ValueError, TypeError):
        return items  # a broken outline: keep what was read before it broke
    return items


# How a destination's view gives the top of what it shows: XYZ (left, top, zoom), FitH/FitBH (top),
# FitR (left, bottom, right, top); the other modes show the whole page.
_VIEW_TOP = {1: 1, 3: 0, 7: 0, 5: 3}


def _dest_y(mode: int, pos: list[float]) -> float | None:
    at = _VIEW_TOP.get(mode)
    return float(pos[at]) if at is not None and at < len(pos) and pos[at] else None


def _outline_sections(outline: list[tuple[int, int, str, float | None]], pages: list[Page],
                      found: list[PageText], start: int) -> tuple[Section, ...]:
    inherited = open_path((level, title) for page, level, title, _ in outline if page < start)
    here = []
    for page_index, level, title, y in outline:
        k = page_index - start
        if 0 <= k < len(pages):
            here.append(Section(pages[k].offset + locate(found[k], title, y), level, title))
    return tuple(inherited) + tuple(sorted(here, key=lambda s: s.start))


def open_path(headings: Any) -> list[Section]:
    """The headings still open after ``(level, title)`` in order, as Sections at offset 0."""
    stack: list[tuple[int, str]] = []
    for level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    return [Section(0, level, title) for level, title in stack]


_KEY = re.compile(r"[^0-9a-z]+")


def locate(page: PageText, title: str, y: float | None) -> int:
    """Where on the page a bookmark points: the line that carries its title, else the first line at or
    below its destination, else the page's start."""
    key = _KEY.sub("", title.lower())[:40]
    for line in page.lines:
        have = _KEY.sub("", line.text.lower())
        if key and have and (have.startswith(key) or (len(have) >= 8 and key.startswith(have))):
            return line.start
    if y is not None:
        for line in page.lines:
            if line.text.strip() and 0 < line.top <= y + 2:
                return line.start
    return 0


def _title(pdf: pypdfium2.PdfDocument, path: Path) -> str:
    try:
        title = (pdf.get_metadata_dict().get("Title") or "").strip()
    except Exception:  # noqa: BLE001 - broken metadata must not lose the text; fall back to the name
        title = ""
    return title or path.stem
