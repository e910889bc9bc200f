"""The CPU-bound stage, run in worker processes (or Ray tasks, or Celery tasks): plan a source, then
load + validate + chunk + extract entities for one part of it. Pure functions of their arguments, so
any executor can run them; per-process caches hold the tokenizer and the entity extractor.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..embed.base import Tokenizer, TokenizerSpec, load_tokenizer
from ..errors import FanragError, LoadError
from ..types import Chunk, Document
from .loaders.base import Part
from .sources import PartJob, SourceFile, SourcePlan

if TYPE_CHECKING:
    from ..embed.base import Embedder
    from ..graph.extract import EntityExtractor
    from ..settings import Settings

SPLITTABLE = frozenset({"pdf", "jsonl"})  # formats whose units (pages, lines) fan out


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


def work_config(settings: Settings, embedder: Embedder) -> WorkConfig:
    """What a load/chunk worker needs from the settings and the embedder (its tokenizer)."""
    p = settings.pipeline
    return WorkConfig(
        tokenizer=embedder.tokenizer_spec(), chunk_size=settings.chunk.size,
        chunk_overlap=settings.chunk.overlap, chunk_min=settings.chunk.min_size,
        chunk_header_tokens=settings.chunk.header_tokens,
        extractor=settings.stores.entity_extractor,
        pdf_page_threshold=p.pdf_page_threshold, pages_per_range=p.pages_per_range,
        jsonl_docs_per_job=p.jsonl_docs_per_job, max_file_bytes=p.max_file_mb << 20)


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
        if not path.is_file():
            raise LoadError(source.path, "file vanished or is not a regular file")
        if path.stat().st_size > cfg.max_file_bytes:
            raise LoadError(source.path, f"larger than the {cfg.max_file_bytes >> 20} MB limit")
        fmt = loaders.sniff(path)
        digest = file_hash(source.path)
        units = loaders.units(path, password=source.password) if fmt in SPLITTABLE else 1
    except FanragError as exc:
        return _one_line(exc, source.path)
    except OSError as exc:
        return f"{source.path}: cannot read ({exc.strerror or exc})"
    return SourcePlan(source=source, format=fmt, content_hash=digest, units=units, parts=_parts(fmt, units, cfg))


def _parts(fmt: str, units: int, cfg: WorkConfig) -> tuple[Part | None, ...]:
    if fmt == "pdf" and units > cfg.pdf_page_threshold:
        step = cfg.pages_per_range
    elif fmt == "jsonl" and units > cfg.jsonl_docs_per_job:
        step = cfg.jsonl_docs_per_job
    else:
        return (None,)
    return tuple(Part(s, min(s + step, units)) for s in range(0, units, step))


def process_part(job: PartJob, cfg: WorkConfig) -> PartResult:
    """Load -> validate -> chunk -> extract entities, for one part. Never raises for bad input."""
    from . import loaders

    t0 = time.perf_counter()
    res = PartResult(job=job)
    src = job.plan.source
    try:
        docs = loaders.load(Path(src.path), uri=src.uri, part=job.part, password=src.password)
    except FanragError as exc:
        res.error = _one_line(exc, src.path)
        return _done(res, t0)
    except OSError as exc:
        res.error = f"{src.path}: cannot read ({exc.strerror or exc})"
        return _done(res, t0)
    res.failures.extend(getattr(docs, "errors", []) or [])
    split = job.part is not None and job.plan.format == "pdf"
    for doc in docs:
        if job.known.get(doc.doc_id) == doc.content_hash and not split:
            res.unchanged.append(doc.doc_id)
            continue
        try:
            chunks = _chunk(doc, cfg)
        except FanragError as exc:
            res.failures.append((doc.uri, _one_line(exc, doc.uri)))
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


def _one_line(exc: Exception, path: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if path in text else f"{path}: {text}"
