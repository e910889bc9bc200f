"""The source ledger: what happened to each source of a run, told exactly once.

A source is accepted, planned, its parts come back (``part_done``), its documents are committed in
batches; it is finished when every part is back and every document it produced is committed. Then, or
when it turns out unchanged or fails as a whole, its outcome is recorded in the metadata store (through
the writer), counted in the run's summary, and told to whoever handed it over (``committed``/``failed``:
a queue acknowledges there). ``settle`` closes the books at the end of a stream: a source still open
then had a part that never completed.

The ledger does no I/O of its own and schedules nothing: the local pipeline and the Celery writer task
feed it the same events, so summaries, progress events and acknowledgements are the same for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ids import document_id
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
    error: str = ""  # a part failed as a whole: so does the source

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

    def planned(self, state: SourceState, plan: SourcePlan) -> None:
        state.plan, state.parts_left = plan, len(plan.parts)
        self._progress.planned(len(plan.parts))

    def part_done(self, result: PartResult) -> list[Piece]:
        """Record what a part produced; return the pieces that need embedding."""
        state = self._states[result.job.plan.source.uri]
        self._progress.part_done(result.pages, len(result.failures) + bool(result.error))
        self.summary.pages += result.pages
        state.error = state.error or result.error
        state.failures.extend(result.failures)
        state.seen_docs.update(result.unchanged)
        state.seen_docs.update(document_id(uri) for uri, _ in result.failures)
        self.summary.unchanged += len(result.unchanged)
        if result.unchanged:
            self._progress.unchanged(len(result.unchanged))
        for piece in result.pieces:
            state.seen_docs.add(piece.doc.doc_id)
            state.pending_docs.add(piece.doc.doc_id)
        state.parts_left -= 1
        return result.pieces

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
        """The source failed as a whole; ``reason`` is one line that names the file."""
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
    """Write a batch of complete documents, then record them (and the sources they complete)."""
    if batch:
        await writer.write(batch)
        await ledger.committed(batch)


def _strip_path(reason: str, path: str) -> str:
    """Reasons usually start with the file's name; the summary prints it once."""
    for prefix in (f"{path}: ", f"{path}:"):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def _chunks(pieces: Sequence[Piece]) -> int:
    return sum(len(p.chunks) for p in pieces)
