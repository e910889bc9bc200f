"""The source ledger: what happened to each source of a run, told exactly once.

A source is accepted, planned, its parts come back (``part_done``), its documents are committed in
batches; it is finished when every part is back and every document it produced is committed. Then, or
when it turns out unchanged or fails as a whole, its outcome is recorded in the metadata store (through
the writer), counted in the run's summary, and told to whoever handed it over (``committed``/``failed``:
a queue acknowledges there). ``settle`` closes the books at the end of a stream: a source still open
then had a part that never completed.

The ledger does no I/O of its own and schedules nothing: the local pipeline and the Celery writer task
feed it the same events, so summaries, progress events and acknowledgements are the same for both.

A source fails as soon as one of its parts fails or its file vanishes before its write; the scheduler then
stops giving it work (``abandon``). Every reason it records or tells is one shown line (``names.shown``),
whatever the file's name holds. Entries of a changed collection whose content is what is committed are
told apart here, in the writer's process (``planned(known=...)``), so that no part job has to carry the
collection's whole table of hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ids import document_id
from ..names import one_line, shown
from .assemble import Ready
from .sources import SourceFile, SourceOutcomes, SourcePlan
from .summary import IngestSummary, Progress, with_defaults
from .work import PartResult, Piece
from .writer import IndexWriter

NO_TEXT = "no text to index (scanned PDF without a text layer? OCR is not supported)"


@dataclass(slots=True)
class SourceState:
    """Book-keeping for one source until its outcome is recorded."""

    src: SourceFile
    plan: SourcePlan | None = None
    parts_left: int = 0
    pending_docs: set[str] = field(default_factory=set)  # produced, not yet committed
    seen_docs: set[str] = field(default_factory=set)  # every doc id the source holds now
    failures: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason) per failed document
    error: str = ""  # a part failed as a whole, or the file vanished before its write: so does the source
    known: dict[str, str] = field(default_factory=dict)  # doc_id -> committed content hash (a collection's)

    @property
    def finished(self) -> bool:
        return self.plan is not None and self.parts_left == 0 and not self.pending_docs


class SourceLedger:
    """Per-source book-keeping for one run, its summary counts and progress events, and the callbacks
    to ``outcomes`` (None where someone else acknowledges, e.g. Celery's late acks)."""

    def __init__(self, writer: IndexWriter, outcomes: SourceOutcomes | None = None,
                 progress: Progress | None = None) -> None:
        self.summary = IngestSummary(stages=writer.stages)  # the writer times its writes into the summary
        self._writer = writer
        self._outcomes = outcomes
        self._progress = with_defaults(progress)
        self._states: dict[str, SourceState] = {}
        self._recorded: set[str] = set()  # sources whose outcome is recorded

    # ------------------------------------------------------------------ events, in the order they come

    def accept(self, src: SourceFile) -> SourceState | None:
        """Open the books on a source; None if it is already open (the same file named twice). A queue's
        redelivery of a source whose outcome is recorded opens them again: its job runs once more."""
        if src.uri in self._states and (src.token is None or src.uri not in self._recorded):
            return None
        self._recorded.discard(src.uri)
        self.summary.sources += 1
        state = self._states[src.uri] = SourceState(src)
        return state

    def planned(self, state: SourceState, plan: SourcePlan, known: dict[str, str] | None = None) -> None:
        """``known``: the committed content hash of each entry of a changed collection (entries whose
        content is the same are skipped, not written again)."""
        state.plan, state.parts_left, state.known = plan, len(plan.parts), known or {}
        self._progress.planned(len(plan.parts))

    def part_done(self, result: PartResult) -> list[Piece]:
        """Record what a part produced; return the pieces that need embedding."""
        state = self._states[result.job.plan.source.uri]
        self._progress.part_done(result.pages, len(result.failures) + bool(result.error))
        self.summary.pages += result.pages
        state.error = state.error or result.error
        state.failures.extend(result.failures)
        pieces = [p for p in result.pieces if not _same(p, state.known)]
        unchanged = [*result.unchanged, *(p.doc.doc_id for p in result.pieces if _same(p, state.known))]
        state.seen_docs.update(unchanged)
        state.seen_docs.update(document_id(uri) for uri, _ in result.failures)
        self.summary.unchanged += len(unchanged)
        if unchanged:
            self._progress.unchanged(len(unchanged))
        for piece in pieces:
            state.seen_docs.add(piece.doc.doc_id)
            state.pending_docs.add(piece.doc.doc_id)
        state.parts_left -= 1
        return pieces

    def failing(self, state: SourceState, reason: str) -> None:
        """A part of the source failed as a whole (its result is on its way): so does the source."""
        state.error = state.error or reason

    def abandon(self, state: SourceState, parts: int) -> None:
        """``parts`` of a failed source will not run: count them as done, so that it can be recorded."""
        state.parts_left -= parts
        self._progress.planned(-parts)

    def embedding(self, pieces: Sequence[Piece], queued: int) -> None:
        """A batch goes to the embedder, ``queued`` part results behind it (told to the progress only)."""
        self._progress.embedding(len(pieces), _chunks(pieces), queued)

    def embedded(self, pieces: Sequence[Piece], seconds: float) -> None:
        """That batch's vectors are back (told to the progress only)."""
        self._progress.embedded(len(pieces), _chunks(pieces), seconds)

    def admit(self, ready: Ready) -> bool:
        """Whether an assembled document goes to the writer: one with nothing to index (e.g. a split PDF
        whose pages are all images) is a failure of that document instead."""
        if ready.chunks:
            return True
        state = self._states[ready.doc.source]
        state.pending_docs.discard(ready.doc.doc_id)
        name = ready.piece.plan.source.path if ready.doc.uri == ready.doc.source else ready.doc.uri
        state.failures.append((name, NO_TEXT))
        return False

    async def left_out(self, batch: Sequence[Ready], reasons: dict[str, str]) -> None:
        """Documents the writer left out because their source's file vanished (source uri -> reason):
        the source fails, once all its parts are back."""
        touched = {}
        for ready in batch:
            state = touched[ready.doc.source] = self._states[ready.doc.source]
            state.pending_docs.discard(ready.doc.doc_id)
            state.error = state.error or reasons[ready.doc.source]
        for state in touched.values():
            if state.finished:
                await self._finish(state)

    async def committed(self, batch: Sequence[Ready]) -> None:
        """A batch the writer committed; sources it completes are recorded."""
        n_chunks = sum(len(r.chunks) for r in batch)
        self.summary.ok += len(batch)
        self.summary.chunks += n_chunks
        self._progress.committed(len(batch), n_chunks)
        touched = {}
        for ready in batch:
            state = touched[ready.doc.source] = self._states[ready.doc.source]
            state.pending_docs.discard(ready.doc.doc_id)
        for state in touched.values():
            if state.finished:
                await self._finish(state)

    async def unchanged(self, state: SourceState, *, touch: bool = False) -> None:
        """The committed version is current (``touch``: same content, a new mtime to remember)."""
        n = await self._writer.record_unchanged(state.src, touch=touch)
        self.summary.unchanged += n
        self.summary.unchanged_sources += 1
        self._progress.unchanged(n)
        self._tell(state.src)

    async def fail(self, state: SourceState, reason: str) -> None:
        """The source failed as a whole; ``reason`` names the file (made one shown line here)."""
        reason = one_line(reason, state.src.path)
        self.summary.failed.append((state.src.path, _strip_path(reason, state.src.path)))
        self._progress.failed(*self.summary.failed[-1])
        await self._writer.record_failed(state.src, reason)
        self._tell(state.src, reason)

    async def settle(self) -> None:
        """Record every source still open: parts that failed, or produced nothing left to commit. A split
        document with a failed range never completes in the assembler: its source fails as a whole."""
        for state in list(self._states.values()):
            if state.src.uri in self._recorded or state.plan is None:
                continue
            if state.error or state.finished:
                await self._finish(state)
            else:
                await self.fail(state, f"{state.src.path}: incomplete (a part did not finish)")

    def missing(self, paths: Iterable[str]) -> None:
        """Paths that were given but do not exist: failures of the run, with no source to record."""
        self.summary.missing_paths = list(paths)
        self.summary.failed.extend((path, "no such file or directory") for path in self.summary.missing_paths)

    # ------------------------------------------------------------------ outcomes

    async def _finish(self, state: SourceState) -> None:
        if state.src.uri in self._recorded:
            return
        assert state.plan is not None
        if state.error:
            return await self.fail(state, state.error)
        if not state.seen_docs:  # every part came back empty: a split collection of blank lines
            return await self.fail(state, f"{state.src.path}: no entries (empty, or blank lines only)")
        state.failures = [(uri, shown(reason)) for uri, reason in state.failures]
        self.summary.failed.extend((uri, _strip_path(reason, uri)) for uri, reason in state.failures)
        for uri, reason in state.failures:
            self._progress.failed(uri, _strip_path(reason, uri))
        self.summary.removed += await self._writer.record_done(
            state.src, state.plan.content_hash, state.failures, state.seen_docs)
        self._tell(state.src, state.failures[0][1] if state.failures else None)

    def _tell(self, src: SourceFile, failure: str | None = None) -> None:
        """The source's outcome is recorded: tell whoever handed it over, once."""
        self._recorded.add(src.uri)
        if self._outcomes is None:
            return
        if failure is None:
            self._outcomes.committed(src)
        else:
            self._outcomes.failed(src, failure)


def completed(writer: IndexWriter, ledger: SourceLedger, pieces: Iterable[tuple[Piece, np.ndarray]]) -> list[Ready]:
    """Assemble pieces with their vectors: the documents they complete that have something to index."""
    ready = (writer.assemble(piece, vectors) for piece, vectors in pieces)
    return [r for r in ready if r is not None and ledger.admit(r)]


async def commit(writer: IndexWriter, ledger: SourceLedger, batch: list[Ready]) -> None:
    """Write a batch of complete documents, then record them (and the sources they complete, or that
    failed because their file vanished before the write)."""
    if not batch:
        return
    left_out = await writer.write(batch)
    if written := [r for r in batch if r.doc.source not in left_out]:
        await ledger.committed(written)
    if left_out:
        await ledger.left_out([r for r in batch if r.doc.source in left_out], left_out)


def _same(piece: Piece, known: dict[str, str]) -> bool:
    """A whole document whose content is the committed one (a split document's parts never are)."""
    return piece.n_parts == 1 and known.get(piece.doc.doc_id) == piece.doc.content_hash


def _strip_path(reason: str, path: str) -> str:
    """Reasons usually start with the file's name (shown); the summary prints it once."""
    path = shown(path)
    for prefix in (f"{path}: ", f"{path}:"):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def _chunks(pieces: Sequence[Piece]) -> int:
    return sum(len(p.chunks) for p in pieces)
