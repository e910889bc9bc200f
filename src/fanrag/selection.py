"""Which documents match: the one place where a user's criteria become document records, for
``fanrag ls`` and ``fanrag delete``.

    Selection(doc_ids=(), source=None, status=None, where=None)    criteria, all of which must hold
    select(meta, selection, limit=None, offset=0)      the matching DocumentRecords, in the store's order
                                                       (by source, then URI; ids in the order given)

An empty ``Selection`` matches every document; a caller that destroys what it selects refuses one
(``Selection.empty``). ``doc_ids`` are looked up one by one and ``Selection.missing`` names those that
are not in the index; every other selection pages through ``MetaStore.documents`` (the protocol's own
listing, filtered by status in the store), so memory stays at one page whatever the index holds.
``where`` is a filter (``fanrag.filters``, the language of ``query --where``): the metadata store
resolves it once to the ids of the committed documents it matches, so it selects committed documents
only, and holds one id per matching document in memory.

A source glob matches the path of the file a document came from (``ids.path_of`` of its source URI,
byte for byte; a source that is not a file is matched as it is written):

    *  ?  [abc]  [!abc]   within one path component, as in the shell
    **                    as a whole component: any number of directories (none included)
    docs/**/*.md          relative: taken from the current directory, as the shell would take it
    **/*.md               a pattern that opens with ** is matched anywhere
    /srv/docs/*.pdf       absolute: as it is
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import TYPE_CHECKING

from .ids import path_of

if TYPE_CHECKING:
    from .filters import Filter
    from .stores.base import DocumentRecord, MetaStore

PAGE = 1000  # documents read from the store per call while scanning
STATUSES = ("committed", "pending", "failed")


@dataclass(frozen=True, slots=True)
class Selection:
    """Criteria a document must all meet. ``source`` is a glob (module docstring), ``status`` one of
    ``STATUSES``; ``cwd`` anchors a relative glob (default: the current directory when matching)."""

    doc_ids: tuple[str, ...] = ()
    source: str | None = None
    status: str | None = None
    cwd: str | None = None
    where: Filter | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")

    @property
    def empty(self) -> bool:
        """No criteria at all: every document matches."""
        return not self.doc_ids and self.source is None and self.status is None and self.where is None

    def matches(self, rec: DocumentRecord) -> bool:
        """Whether ``rec`` meets every criterion but ``doc_ids`` (which ``select`` looks up directly)."""
        if self.status is not None and rec.status != self.status:
            return False
        return self.source is None or _glob(self.source, self.cwd).fullmatch(source_path(rec.source)) is not None

    def missing(self, found: Sequence[DocumentRecord]) -> list[str]:
        """The ids asked for that are not among ``found`` (not in the index, or not meeting the rest)."""
        have = {r.doc_id for r in found}
        return [i for i in dict.fromkeys(self.doc_ids) if i not in have]


def select(meta: MetaStore, selection: Selection, *, limit: int | None = None,
           offset: int = 0) -> list[DocumentRecord]:
    """The documents ``selection`` matches, ``limit`` of them from ``offset``."""
    if not selection.doc_ids and selection.source is None and selection.where is None:  # the store pages
        return meta.documents(selection.status, None, limit, offset)
    stop = None if limit is None else offset + limit
    return list(islice(_matching(meta, selection), offset, stop))


def _matching(meta: MetaStore, selection: Selection) -> Iterator[DocumentRecord]:
    if selection.doc_ids:
        found = (meta.get_document(i) for i in dict.fromkeys(selection.doc_ids))
        candidates: Iterator[DocumentRecord] = (r for r in found if r is not None)
    else:
        candidates = _scan(meta, selection.status)
    if selection.where is not None:
        allowed = set(meta.filter_documents(selection.where))  # in SQL, once: not a test per record
        candidates = (r for r in candidates if r.doc_id in allowed)
    return (r for r in candidates if selection.matches(r))


def _scan(meta: MetaStore, status: str | None) -> Iterator[DocumentRecord]:
    offset = 0
    while True:
        page = meta.documents(status, None, PAGE, offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def source_path(source: str) -> str:
    """What a source glob is matched against: the file's path for a file URI, else the source itself."""
    path = path_of(source)
    return source if path is None else str(path)


def _glob(pattern: str, cwd: str | None) -> re.Pattern[str]:
    """``pattern`` (module docstring) as a regular expression over absolute paths."""
    if not pattern.startswith(("/", "**")):
        # normpath: ./docs/*.md and ../x/*.md as the shell takes them (the paths matched hold no . or ..)
        pattern = posixpath.normpath(posixpath.join(cwd or os.getcwd(), pattern))
    return compiled_glob(pattern)


@lru_cache(maxsize=64)
def compiled_glob(pattern: str) -> re.Pattern[str]:
    """An absolute glob (module docstring) as a regular expression over paths; shared with the filter language."""
    parts = pattern.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")  # the slash after it is part of the repeat
            continue
        out.append(_component(part) + ("" if last else "/"))
    return re.compile("".join(out), re.DOTALL)


def _component(part: str) -> str:
    """One path component of a glob as a regular expression that never crosses a slash."""
    out, i = [], 0
    while i < len(part):
        char = part[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(part, i)) != -1:
            body = part[i:end]
            negate = body.startswith("!")
            body = re.sub(r"([\\\[\]^])", r"\\\1", body[1:] if negate else body)  # only '-' keeps a meaning
            out.append("[" + ("^/" if negate else "") + body + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _class_end(part: str, start: int) -> int:
    """Where the character class opened just before ``start`` closes (-1: the '[' is a plain character).
    A ']' right after '[' or '[!' belongs to the class, as in the shell."""
    i = start + (part[start:start + 1] == "!")
    i += part[i:i + 1] == "]"
    return part.find("]", i)
