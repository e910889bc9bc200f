"""Pick a loader by content first, extension second.

Magic bytes win (a ``.txt`` that is really a PDF loads as a PDF); a file with a binary format's
extension but without its magic goes to that format's loader, which reports it as corrupt; anything
else must be text, and then markup markers and the extension decide between HTML, Markdown, JSONL and
plain text.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EmptyDocument, EncryptedDocument, UnsupportedFormat
from ._common import os_errors, read_head
from .limits import resolve

if TYPE_CHECKING:
    from ...settings import IngestSettings

PDF_EXT = frozenset({".pdf"})
DOCX_EXT = frozenset({".docx"})
HTML_EXT = frozenset({".html", ".htm", ".xhtml"})
MARKDOWN_EXT = frozenset({".md", ".markdown"})
JSONL_EXT = frozenset({".jsonl", ".ndjson"})
TEXT_EXT = frozenset({".txt", ".text", ".rst", ".asciidoc", ".adoc", ".org", ".csv", ".tsv", ".log"})
SUPPORTED_EXTENSIONS = PDF_EXT | DOCX_EXT | HTML_EXT | MARKDOWN_EXT | JSONL_EXT | TEXT_EXT

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a password-protected .docx is an OLE container
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13}


def sniff(path: str | Path, *, limits: IngestSettings | None = None) -> str:
    """The format name of a file: pdf, docx, html, markdown, jsonl or text.

    Raises EmptyDocument for a 0-byte file, UnsupportedFormat for binary content that is none of the
    binary formats, LimitExceeded for a zip with more entries than ``ingest.max_zip_entries`` (its
    directory is not read), and LoadError when the file vanished.
    """
    path = Path(path)
    head = read_head(path)
    ext = path.suffix.lower()
    if not head:
        raise EmptyDocument(str(path), "empty file (0 bytes)")
    binary = _binary_format(path, head, ext, limits)
    if binary:
        return binary
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedFormat(str(path), "UTF-16 text (byte-order mark); only UTF-8 is supported: convert it")
    if _looks_binary(head):
        what = f"{ext} file" if ext else "file without extension"
        raise UnsupportedFormat(str(path), f"binary content (not text) in a {what}")
    return _text_format(head, ext)


def _binary_format(path: Path, head: bytes, ext: str, limits: IngestSettings | None) -> str | None:
    # PDF allows up to 1 KB of junk before the header; some generators do write a preamble.
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if _is_docx(path, limits):
            return "docx"
        raise UnsupportedFormat(str(path), "zip archive that is not a DOCX (no word/document.xml)")
    if head.startswith(_OLE_MAGIC) and ext in DOCX_EXT:
        raise EncryptedDocument(str(path), "encrypted Office document (password-protected DOCX is not supported)")
    if ext in PDF_EXT:
        return "pdf"  # no magic: the PDF loader reports it as corrupt
    if ext in DOCX_EXT:
        return "docx"
    return None


def _is_docx(path: Path, limits: IngestSettings | None) -> bool:
    from .docx import check_entries

    check_entries(path, resolve(limits))  # zipfile would read the whole directory to list the names
    with os_errors(path):
        try:
            with zipfile.ZipFile(path) as z:
                return "word/document.xml" in z.namelist()
        except zipfile.BadZipFile:
            return False


def _looks_binary(head: bytes) -> bool:
    """NUL bytes or many control characters: binary. Invalid UTF-8 alone is not binary (the text
    loaders report the offending byte instead)."""
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b in _CONTROL)
    return control > len(head) // 20


def _text_format(head: bytes, ext: str) -> str:
    raw = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    lead = raw.lower()
    if lead.startswith(b"<!doctype html") or b"<html" in lead[:1024] or ext in HTML_EXT:
        return "html"
    if ext in MARKDOWN_EXT:
        return "markdown"
    if ext in JSONL_EXT or _first_line_is_entry(raw):
        return "jsonl"
    return "text"


def _first_line_is_entry(lead: bytes) -> bool:
    if not lead.startswith(b"{"):
        return False
    line = lead.split(b"\n", 1)[0]
    try:
        obj = json.loads(line)
    except ValueError:
        return False  # also a first line longer than the head: such a file must be named .jsonl
    return isinstance(obj, dict) and ("_id" in obj or "text" in obj)
