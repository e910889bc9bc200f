"""The CPU-bound stage, run in worker processes (or Ray tasks, or Celery tasks): plan a source, then
load + validate + chunk + extract entities for one part of it. Pure functions of their arguments, so
any executor can run them; per-process caches hold the tokenizer and the entity extractor.

A plan's parts are described in O(1) (``Parts``: the unit count and the step), so a part job carries its
own range and the plan's small header, however many parts there are; and a source never has more than
``MAX_PARTS`` parts (a larger source gets larger parts), so scheduling one costs a bounded number of jobs
whatever its page or line count claims. A file that is bad in any way fails by itself: whatever a loader
raises becomes that file's one-line reason, never the run's exception.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, overload

from ..embed.base import Tokenizer, TokenizerSpec, load_tokenizer
from ..errors import FanragError, LoadError
from ..names import one_line, storable
from ..types import Chunk, Document
from .executors.base import WorkerCrashed
from .loaders.base import Part
from .sources import PartJob, SourceFile, SourcePlan

if TYPE_CHECKING:
    from ..embed.base import Embedder
    from ..graph.extract import EntityExtractor
    from ..settings import IngestSettings, Settings

SPLITTABLE = frozenset({"pdf", "jsonl"})  # formats whose units (pages, lines) fan out
# The most parts one source is cut into: past it, parts grow instead. Parts are cheap to describe but each
# is a job (a round trip to a worker, and for a JSONL part a scan to its first line), so their number is
# what bounds the scheduling of a 5M-line collection or a PDF that claims a million pages.
MAX_PARTS = 1024


@dataclass(frozen=True, slots=True)
class Parts(Sequence["Part | None"]):
    """The parts of a source in O(1): ``units`` cut into runs of ``step``; ``step`` 0 is the whole source
    as one part (``None``). Each ``Part`` is made when indexed, so a job carries its own range and this
    header, never the list (32,750 ranges of a lying PDF were 647 kB in every one of its jobs)."""

    units: int
    step: int = 0

    def __len__(self) -> int:
        return 1 if self.step <= 0 else -(-self.units // self.step)

    @overload
    def __getitem__(self, index: int) -> Part | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[Part | None]: ...

    def __getitem__(self, index: int | slice) -> Part | None | list[Part | None]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        i = range(len(self))[index]  # bounds and negative indexes as a sequence has them
        return None if self.step <= 0 else Part(i * self.step, min((i + 1) * self.step, self.units))

    def __iter__(self) -> Iterator[Part | None]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True, slots=True)
class WorkConfig:
    """The settings a worker needs, small enough to pickle with every job."""

    tokenizer: TokenizerSpec
    chunk_size: int
    chunk_overlap: int
    chunk_min: int
    chunk_header_tokens: int
    extractor: str
    pdf_page_threshold: int
    pages_per_range: int
    jsonl_docs_per_job: int
    max_file_bytes: int
    limits: IngestSettings | None = None  # the loaders' bounds (``ingest.*``); None: their defaults


def work_config(settings: Settings, embedder: Embedder) -> WorkConfig:
    """What a load/chunk worker needs from the settings and the embedder (its tokenizer)."""
    p = settings.pipeline
    return WorkConfig(
        tokenizer=embedder.tokenizer_spec(), chunk_size=settings.chunk.size,
        chunk_overlap=settings.chunk.overlap, chunk_min=settings.chunk.min_size,
        chunk_header_tokens=settings.chunk.header_tokens,
        extractor=settings.stores.entity_extractor,
        pdf_page_threshold=p.pdf_page_threshold, pages_per_range=p.pages_per_range,
        jsonl_docs_per_job=p.jsonl_docs_per_job, max_file_bytes=p.max_file_mb << 20, limits=settings.ingest)


@dataclass(slots=True)
class Piece:
    """One document's chunks from one part. A split PDF yields one Piece per page range; the
    assembler merges them in ``index`` order before the document is written."""

    plan: SourcePlan
    doc: Document
    chunks: list[Chunk]
    index: int = 0
    n_parts: int = 1


@dataclass(slots=True)
class PartResult:
    job: PartJob
    pieces: list[Piece] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # doc ids skipped because their hash matched
    failures: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason) per bad document
    error: str = ""  # the whole part failed (one line, names the file)
    seconds: float = 0.0
    pages: int = 0


def file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def plan_source(source: SourceFile, cfg: WorkConfig) -> SourcePlan | str:
    """Sniff, hash and size a source; decide its parts. Returns the plan, or a one-line error."""
    from . import loaders

    path = Path(source.path)
    try:
        size = _regular_size(source.path)
        if size > cfg.max_file_bytes:
            raise LoadError(source.path, f"larger than the {cfg.max_file_bytes >> 20} MB limit")
        fmt = loaders.sniff(path, limits=cfg.limits)
        digest = file_hash(source.path)
        units = loaders.units(path, password=source.password, limits=cfg.limits) if fmt in SPLITTABLE else 1
        if units > max(size, 1):  # every page or line takes at least a byte: the count is a lie
            raise LoadError(source.path, f"claims {units} {_unit(fmt)}, more than its {size} bytes can hold")
    except Exception as exc:  # noqa: BLE001 - a loader's bug or a hostile file fails that file, not the run
        return reason_of(exc, source.path)
    return SourcePlan(source=source, format=fmt, content_hash=digest, units=units,
                      parts=_parts(fmt, units, cfg))  # type: ignore[arg-type]  # a Sequence, not the tuple


def _regular_size(path: str) -> int:
    """The size of the regular file at ``path`` (symlinks followed). Anything else (a FIFO, a device, a
    directory, a symlink loop, a file gone) fails here, by its kind, before anything opens it: opening
    a FIFO would block, and reading /dev/zero never ends."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LoadError(path, "no such file (removed, or a dangling symlink)") from None
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(path, f"not a regular file but {_kind(st.st_mode)}")
    return st.st_size


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def _unit(fmt: str) -> str:
    return {"pdf": "pages", "jsonl": "lines"}.get(fmt, "units")


def _parts(fmt: str, units: int, cfg: WorkConfig) -> Parts:
    if fmt == "pdf" and units > cfg.pdf_page_threshold:
        step = cfg.pages_per_range
    elif fmt == "jsonl" and units > cfg.jsonl_docs_per_job:
        step = cfg.jsonl_docs_per_job
    else:
        return Parts(units)
    return Parts(units, max(step, -(-units // MAX_PARTS)))


def process_part(job: PartJob, cfg: WorkConfig) -> PartResult:
    """Load -> validate -> chunk -> extract entities, for one part. Never raises for bad input."""
    from . import loaders

    t0 = time.perf_counter()
    res = PartResult(job=job)
    src = job.plan.source
    try:
        docs = loaders.load(Path(src.path), uri=src.uri, part=job.part, password=src.password, limits=cfg.limits)
    except Exception as exc:  # noqa: BLE001 - whatever a loader raises is this file's failure
        res.error = reason_of(exc, src.path)
        return _done(res, t0)
    res.failures.extend((uri, one_line(reason, src.path)) for uri, reason in getattr(docs, "errors", []) or [])
    split = job.part is not None and job.plan.format == "pdf"
    for doc in map(_storable, docs):
        if job.known.get(doc.doc_id) == doc.content_hash and not split:
            res.unchanged.append(doc.doc_id)
            continue
        try:
            chunks = _chunk(doc, cfg)
        except Exception as exc:  # noqa: BLE001 - one bad document of a collection fails alone
            res.failures.append((doc.uri, reason_of(exc, doc.uri)))
            continue
        res.pages += doc.n_pages
        res.pieces.append(Piece(job.plan, doc, chunks, job.index if split else 0,
                                len(job.plan.parts) if split else 1))
    return _done(res, t0)


def _chunk(doc: Document, cfg: WorkConfig) -> list[Chunk]:
    from .chunker import chunk_document

    chunks = chunk_document(doc, _tokenizer(cfg.tokenizer), size=cfg.chunk_size,
                            overlap=cfg.chunk_overlap, min_size=cfg.chunk_min,
                            header_tokens=cfg.chunk_header_tokens)
    extractor = _extractor(cfg.extractor)
    if extractor is None or not chunks:
        return chunks
    found = extractor.extract([c.text for c in chunks])
    return [replace(c, entities=tuple(ents)) for c, ents in zip(chunks, found, strict=True)]


def _tokenizer(spec: TokenizerSpec) -> Tokenizer:
    return load_tokenizer(spec)  # cached per process


@lru_cache(maxsize=4)
def _extractor(name: str) -> EntityExtractor | None:  # cached per process
    if name == "none":
        return None
    from ..graph.factory import create_extractor

    return create_extractor(name)


def _done(res: PartResult, t0: float) -> PartResult:
    res.seconds = time.perf_counter() - t0
    return res


_SURROGATES = re.compile("[\ud800-\udfff]")


def _storable(doc: Document) -> Document:
    """A document every store and the embedder accept: a lone surrogate (a JSON "\\ud800" escape, a
    file name's undecodable byte in a title) would fail the UTF-8 encoders of the stores and abort the
    batch. In the text it becomes U+FFFD (one character for one: offsets stay), in the title its escape."""
    texts = (doc.text, doc.title, *(p.text for p in doc.pages))
    if not any(_SURROGATES.search(t) for t in texts):
        return doc
    pages = tuple(replace(p, text=_SURROGATES.sub("\ufffd", p.text)) for p in doc.pages)
    return replace(doc, text=_SURROGATES.sub("\ufffd", doc.text), title=storable(doc.title), pages=pages)


def reason_of(exc: BaseException, path: str) -> str:
    """One shown line naming ``path``: a fanrag error (or a crashed worker) as it says, an OSError by its
    strerror, anything else (a loader's bug, a RecursionError on deep nesting, a MemoryError) with its
    type's name."""
    if isinstance(exc, FanragError | WorkerCrashed):
        message = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError):
        message = f"cannot read ({exc.strerror or exc})"
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return one_line(message, path)
