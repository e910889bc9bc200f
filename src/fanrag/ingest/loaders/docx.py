"""DOCX with python-docx: paragraphs and tables in document order, joined by blank lines (a table row is
one line, cells separated by " | "). Title from the core properties, else the first Title/Heading
paragraph, else the file name.

Structure: a paragraph whose style is "Heading N" (or a style with an outline level) is a ``Section`` of
level N; every table is a ``Table`` whose header is its first row. Style names are resolved once per
document from the styles part: python-docx's ``Paragraph.style`` scans every style of the document for
each paragraph, which made a 100,000-paragraph file take minutes.

Bounds (checked on the zip directory, before python-docx inflates or parses anything): entries
(``ingest.max_zip_entries``, read from the end-of-directory record before the directory itself), all
entries uncompressed (``max_unpacked_mb``), one XML part (``max_xml_mb``) and each entry's compression
ratio (``max_ratio``). Declared sizes are made binding: every entry is inflated a chunk at a time before
python-docx opens the file, so a lying entry fails its CRC check after at most a chunk past its declared
size, and a directory that understates a bomb is a corrupt file (never the bomb in memory).
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CorruptDocument
from ...ids import document_id
from ...types import Document, Section, Table
from ._common import hash_file, os_errors, require_text
from .limits import MIB, check_ratio, exceeded, resolve, size

if TYPE_CHECKING:
    from ...settings import IngestSettings

MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
BLOCK_SEP = "\n\n"
_HEADING_NAME = re.compile(r"heading\s*([1-9])", re.IGNORECASE)
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_XML_PARTS = (".xml", ".rels")


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph or table as text; ``level`` > 0 for a heading, ``header`` set for a table."""

    text: str
    level: int = 0
    header: str = ""
    is_table: bool = False


class DocxLoader:
    name = "docx"
    splittable = False

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list[Document]:
        check_archive(path, resolve(limits))
        doc = _open(path)
        blocks, heading = _blocks(doc)
        text, sections, tables = assemble(blocks)
        require_text(path, text, "no text in the document body")
        title = (doc.core_properties.title or "").strip() or heading or path.stem
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=title, mime=MIME, sections=sections, tables=tables)]


_CHUNK = 1 << 20  # bytes inflated at a time while checking entries


# -- bounds ---------------------------------------------------------------------------------------------

def check_entries(path: Path, limits: IngestSettings) -> None:
    """Refuse a zip with more entries than ``ingest.max_zip_entries`` before its directory is read."""
    entries = zip_entry_count(path)
    if entries is not None and entries > limits.max_zip_entries:
        raise exceeded(path, f"zip archive with {entries:,} entries", "max_zip_entries", limits.max_zip_entries)


def check_archive(path: Path, limits: IngestSettings) -> None:
    """Refuse a zip whose directory declares more than the ``ingest`` bounds allow."""
    check_entries(path, limits)
    with os_errors(path):
        try:
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                check_sizes(path, limits, infos)
                for info in infos:
                    inflate_bounded(archive, info)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise CorruptDocument(str(path), f"not a readable DOCX ({type(exc).__name__}: {exc})") from exc


def inflate_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Inflate one entry a chunk at a time and drop it, so that its CRC is checked before python-docx reads
    it whole: ``ZipFile.read`` inflates an entry's whole stream in one call and only then cuts it at the
    declared size, so a directory that understated a bomb had it all in memory (256 MiB for 200 declared
    bytes). Read in chunks, zipfile inflates at most a chunk past the declared size, then the CRC fails."""
    with archive.open(info) as entry:
        while entry.read(_CHUNK):
            pass


def check_sizes(path: Path, limits: IngestSettings, infos: list[zipfile.ZipInfo]) -> None:
    """The declared sizes against the bounds (what the directory says, before anything is inflated)."""
    total = 0
    for info in infos:
        total += info.file_size
        if info.filename.endswith(_XML_PARTS) and info.file_size > limits.max_xml_mb * MIB:
            raise exceeded(path, f"XML part {info.filename} is {size(info.file_size)} uncompressed",
                           "max_xml_mb", limits.max_xml_mb, " MiB")
        check_ratio(path, f"zip entry {info.filename}", info.file_size, info.compress_size, limits)
    if total > limits.max_unpacked_mb * MIB:
        raise exceeded(path, f"zip entries total {size(total)} uncompressed", "max_unpacked_mb",
                       limits.max_unpacked_mb, " MiB")


def zip_entry_count(path: Path) -> int | None:
    """Entries the end-of-central-directory record declares (zip64 too), read from the file's last
    64 KiB without loading the directory; None when there is no such record (not a zip)."""
    with os_errors(path), open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 22:
        return None
    count = struct.unpack_from("<H", tail, at + 10)[0]
    at64 = tail.rfind(_EOCD64, 0, at)
    if count == 0xFFFF and at64 >= 0 and len(tail) >= at64 + 40:
        count = struct.unpack_from("<Q", tail, at64 + 32)[0]
    return count


# -- reading --------------------------------------------------------------------------------------------

def _open(path: Path) -> Any:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import LxmlError

    with os_errors(path):
        if not path.exists():
            raise FileNotFoundError(path)
        try:
            return docx.Document(str(path))
        except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, LxmlError) as exc:
            raise CorruptDocument(str(path), f"not a readable DOCX ({type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc


def _blocks(doc: Any) -> tuple[list[Block], str]:
    """Non-empty paragraphs and tables, in order, and the first Title/Heading paragraph's text."""
    from docx.table import Table as DocxTable

    styles = style_levels(doc)
    blocks: list[Block] = []
    heading = ""
    for item in doc.iter_inner_content():
        if isinstance(item, DocxTable):
            rows = table_rows(item)
            if rows:
                blocks.append(Block("\n".join(rows), header=rows[0], is_table=True))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = styles.get(item._p.style or "")  # pStyle's id; no pStyle is the default (body) style
        if level is not None and not heading:
            heading = text
        blocks.append(Block(text, level=max(level or 0, 0)))
    return blocks, heading


def style_levels(doc: Any) -> dict[str, int]:
    """Style id -> heading level for the styles that are headings or the title (the title as -1, so it
    names the document without opening a section): "Heading N" by name, else the style's outline level."""
    from docx.oxml.ns import qn

    levels: dict[str, int] = {}
    for style in doc.styles.element.iterchildren(qn("w:style")):
        sid = style.get(qn("w:styleId")) or ""
        name_el = style.find(qn("w:name"))
        name = (name_el.get(qn("w:val")) if name_el is not None else "") or ""
        if name.lower() == "title":
            levels[sid] = -1
        elif m := _HEADING_NAME.fullmatch(name.strip()):
            levels[sid] = int(m.group(1))
        elif (outline := style.find(f"{qn('w:pPr')}/{qn('w:outlineLvl')}")) is not None:
            value = outline.get(qn("w:val")) or ""
            if value.isdigit() and int(value) < 9:  # 9 is "body text"
                levels[sid] = int(value) + 1
    return levels


def table_rows(table: Any) -> list[str]:
    """Each non-empty row as one line, cells separated by " | "."""
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            value = " ".join(cell.text.split())
            # Merged cells repeat the same cell object along the row; keep the text once.
            if not cells or cells[-1] != value:
                cells.append(value)
        line = " | ".join(cells).strip(" |")
        if line:
            rows.append(line)
    return rows


def assemble(blocks: Iterable[Block]) -> tuple[str, tuple[Section, ...], tuple[Table, ...]]:
    """The blocks joined by blank lines, with where each heading and table landed."""
    parts: list[str] = []
    sections: list[Section] = []
    tables: list[Table] = []
    offset = 0
    for block in blocks:
        if block.level:
            sections.append(Section(offset, block.level, block.text))
        if block.is_table:
            tables.append(Table(offset, offset + len(block.text), block.header))
        parts.append(block.text)
        offset += len(block.text) + len(BLOCK_SEP)
    return BLOCK_SEP.join(parts), tuple(sections), tuple(tables)
