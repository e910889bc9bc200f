"""DOCX with python-docx: paragraphs and tables in document order (a table row is one line, cells
separated by " | "). Title from the core properties, else the first Title/Heading paragraph, else the
file name."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ...errors import CorruptDocument
from ...ids import document_id
from ...types import Document
from ._common import hash_file, os_errors, require_text


class DocxLoader:
    name = "docx"
    splittable = False

    def units(self, path: Path, *, password: str | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None) -> list[Document]:
        doc = _open(path)
        blocks, heading = _blocks(doc)
        text = "\n\n".join(blocks)
        require_text(path, text, "no text in the document body")
        title = (doc.core_properties.title or "").strip() or heading or path.stem
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=title,
                         mime="application/vnd.openxmlformats-officedocument.wordprocessingml.document")]


def _open(path: Path) -> Any:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    with os_errors(path):
        if not path.exists():
            raise FileNotFoundError(path)
        try:
            return docx.Document(str(path))
        except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise CorruptDocument(str(path), f"not a readable DOCX ({type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc


def _blocks(doc: Any) -> tuple[list[str], str]:
    """Non-empty paragraphs and tables, in order, and the first heading's text."""
    from docx.table import Table

    blocks: list[str] = []
    heading = ""
    for item in doc.iter_inner_content():
        if isinstance(item, Table):
            text = _table_text(item)
        else:
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            if text and not heading and (style == "Title" or style.startswith("Heading")):
                heading = text
        if text:
            blocks.append(text)
    return blocks, heading


def _table_text(table: Any) -> str:
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
    return "\n".join(rows)
