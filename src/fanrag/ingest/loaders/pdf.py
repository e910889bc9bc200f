"""PDF with pypdfium2, page by page. Pages are opened and closed one at a time so memory stays flat
on a 2,000-page manual; a page range (``Part``) is loaded without touching the other pages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CorruptDocument, EmptyDocument, EncryptedDocument, LoadError
from ...ids import document_id
from ...types import Document, Page
from ._common import hash_file, os_errors
from .base import Part

if TYPE_CHECKING:
    import pypdfium2

PAGE_SEP = "\n\n"
_PASSWORD_ERROR = 4  # FPDF_ERR_PASSWORD
_NO_TEXT = "no text layer (scanned PDF? OCR is not supported)"


class PdfLoader:
    name = "pdf"
    splittable = True

    def units(self, path: Path, *, password: str | None = None) -> int:
        pdf = _open(path, password)
        try:
            return len(pdf)
        finally:
            pdf.close()

    def load(self, path: Path, *, uri: str, part: Part | None = None,
             password: str | None = None) -> list[Document]:
        pdf = _open(path, password)
        try:
            total = len(pdf)
            if total == 0:
                raise EmptyDocument(str(path), "PDF has no pages")
            start, stop = (0, total) if part is None else _check_part(path, part, total)
            pages = _read_pages(pdf, path, start, stop)
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
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=title, mime="application/pdf", pages=tuple(pages),
                         metadata=metadata)]


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


def _read_pages(pdf: pypdfium2.PdfDocument, path: Path, start: int, stop: int) -> list[Page]:
    import pypdfium2 as pdfium

    pages: list[Page] = []
    offset = 0
    for i in range(start, stop):
        try:
            text = _page_text(pdf, i)
        except pdfium.PdfiumError as exc:
            raise CorruptDocument(str(path), f"page {i + 1} is unreadable ({_pdfium_reason(exc)})") from exc
        pages.append(Page(number=i + 1, text=text, offset=offset))
        offset += len(text) + len(PAGE_SEP)
    return pages


def _page_text(pdf: pypdfium2.PdfDocument, index: int) -> str:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    return _clean(raw)


def _clean(raw: str) -> str:
    # pdfium ends lines with \r\n, marks soft hyphens as \x02 / \ufffe and pads with NULs.
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x02", "-").replace("\ufffe", "-").replace("\x00", "")
    return text.strip()


def _title(pdf: pypdfium2.PdfDocument, path: Path) -> str:
    try:
        title = (pdf.get_metadata_dict().get("Title") or "").strip()
    except Exception:  # noqa: BLE001 - broken metadata must not lose the text; fall back to the name
        title = ""
    return title or path.stem
