"""An ingest run's events (the source ledger's: the ones the CLI progress and the web UI's ingest view are
told) as OpenTelemetry spans.

    fanrag.ingest ─┬ fanrag.ingest.source    one per file: accepted -> outcome recorded (committed,
                   │   └ fanrag.ingest.load_chunk   unchanged or failed, with its reason); per part
                   ├ fanrag.ingest.embed     one per embedding batch, linked to its sources' spans
                   └ fanrag.ingest.write     one per write batch (the four stores and the commit), linked

``run`` wraps ``IngestPipeline.arun``: the root span is current while the run's tasks start, so the
ledger built inside it (``ledger``) hangs everything under it; an exception ends the root as ERROR. The
ledger is fanrag's own ``SourceLedger`` with four events also turned into spans, and its outcomes
callback (``SourceOutcomes``: told exactly once per source) teed to end each source's span.

Times: embed and write spans are the stages' own measured seconds, ending when the ledger hears of
them (right after the call returns; writes run one at a time, so each batch's seconds are the growth of
the run's write total). Loading and chunking run in a worker process: a part's span is the worker's own
seconds, ending when its result reached the embedding stage (under backpressure that is later than
the worker finished).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec

from ..ingest.ledger import SourceLedger
from ..names import shown
from . import setup
from .spans import AttrValue, capped, emit, finish, start

if TYPE_CHECKING:
    from ..ingest.assemble import Ready
    from ..ingest.ledger import SourceState
    from ..ingest.sources import SourceFile, SourceOutcomes, SourcePlan
    from ..ingest.summary import IngestSummary, Progress
    from ..ingest.work import PartResult, Piece
    from ..ingest.writer import IndexWriter

P = ParamSpec("P")


def run(fn: Callable[P, Awaitable[IngestSummary]]) -> Callable[P, Awaitable[IngestSummary]]:
    """Decorate an ingest run: under a ``fanrag.ingest`` root span when tracing is on, as it is otherwise."""

    @functools.wraps(fn)
    async def traced(*args: P.args, **kwargs: P.kwargs) -> IngestSummary:
        tracer = setup.tracer()
        if tracer is None:
            return await fn(*args, **kwargs)
        from opentelemetry import trace

        with tracer.start_as_current_span("fanrag.ingest") as root:  # records an exception, status ERROR
            summary = await fn(*args, **kwargs)
            root.set_attributes(_summary_attributes(summary))
            if summary.failed:
                root.set_status(trace.Status(trace.StatusCode.ERROR, f"{len(summary.failed)} failed"))
            return summary

    return traced


def ledger(writer: IndexWriter, outcomes: SourceOutcomes | None = None,
           progress: Progress | None = None) -> SourceLedger:
    """A ``SourceLedger``; one whose events are spans too when tracing is on."""
    tracer = setup.tracer()
    if tracer is None:
        return SourceLedger(writer, outcomes, progress)
    return TracedLedger(tracer, writer, outcomes, progress)


def _summary_attributes(summary: IngestSummary) -> dict[str, AttrValue]:
    st = summary.stages
    return {"fanrag.sources": summary.sources, "fanrag.committed": summary.ok, "fanrag.unchanged": summary.unchanged,
            "fanrag.failed": len(summary.failed), "fanrag.removed": summary.removed, "fanrag.chunks": summary.chunks,
            "fanrag.pages": summary.pages, "fanrag.stage.plan_s": st.plan, "fanrag.stage.load_chunk_s": st.load_chunk,
            "fanrag.stage.embed_s": st.embed, "fanrag.stage.write_s": st.write}


@dataclass(slots=True)
class _Open:
    """A source's span until its outcome, and what its documents added up to."""

    span: Any
    docs: list[str] = field(default_factory=list)
    chunks: int = 0


class TracedLedger(SourceLedger):
    """The source ledger, with its events also recorded as spans (under the span current when built)."""

    def __init__(self, tracer: Any, writer: IndexWriter, outcomes: SourceOutcomes | None,
                 progress: Progress | None) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._root = trace.get_current_span()
        self._open: dict[str, _Open] = {}
        self._stages = writer.stages
        self._write_s, self._store_s = 0.0, dict[str, float]()
        self._queued: dict[int, int] = {}
        super().__init__(writer, _Outcomes(self, outcomes), progress)

    def accept(self, src: SourceFile) -> SourceState | None:
        state = super().accept(src)
        if state is not None:
            self._close(src.uri, "error: redelivered before its outcome")  # a queue's redelivery: a new span
            attrs: dict[str, AttrValue] = {"fanrag.source": shown(src.path), "fanrag.source.uri": shown(src.uri), "fanrag.bytes": src.size}
            self._open[src.uri] = _Open(start(self._tracer, "fanrag.ingest.source", time.time_ns(), self._root, attrs))
        return state

    def planned(self, state: SourceState, plan: SourcePlan, known: dict[str, str] | None = None) -> None:
        super().planned(state, plan, known)
        if (o := self._open.get(plan.source.uri)) is not None:
            o.span.set_attributes({"fanrag.format": plan.format, "fanrag.parts": len(plan.parts)})

    def part_done(self, result: PartResult) -> list[Piece]:
        pieces = super().part_done(result)
        end = time.time_ns()
        o = self._open.get(result.job.plan.source.uri)
        docs = [p.doc.doc_id for p in result.pieces]
        attrs: dict[str, AttrValue] = {"fanrag.part": result.job.index, "fanrag.pages": result.pages, "fanrag.docs": len(docs),
                 "fanrag.doc_ids": capped(docs), "fanrag.chunks": sum(len(p.chunks) for p in result.pieces),
                 "fanrag.unchanged": len(result.unchanged), "fanrag.failed": len(result.failures)}
        status = f"error: {result.error}" if result.error else "ok"
        emit(self._tracer, "fanrag.ingest.load_chunk", end - int(result.seconds * 1e9), end,
             o.span if o else self._root, status, attrs)
        return pieces

    def embedding(self, pieces: Sequence[Piece], queued: int) -> None:
        super().embedding(pieces, queued)
        self._queued[id(pieces)] = queued  # the same list comes back in ``embedded``

    def embedded(self, pieces: Sequence[Piece], seconds: float) -> None:
        super().embedded(pieces, seconds)
        end, chunks = time.time_ns(), sum(len(p.chunks) for p in pieces)
        attrs: dict[str, AttrValue] = {"fanrag.batch.docs": len(pieces), "fanrag.batch.chunks": chunks,
                 "fanrag.queued": self._queued.pop(id(pieces), 0),
                 "fanrag.doc_ids": capped([p.doc.doc_id for p in pieces]),
                 "fanrag.chunks_per_s": round(chunks / seconds, 1) if seconds > 0 else 0.0}
        emit(self._tracer, "fanrag.ingest.embed", end - int(seconds * 1e9), end, self._root, "ok", attrs,
             self._links(p.plan.source.uri for p in pieces))

    async def committed(self, batch: Sequence[Ready]) -> None:
        end, (seconds, stores) = time.time_ns(), self._write_growth()
        for r in batch:
            if (o := self._open.get(r.doc.source)) is not None:
                o.docs.append(r.doc.doc_id)
                o.chunks += len(r.chunks)
        attrs: dict[str, AttrValue] = {
            "fanrag.batch.docs": len(batch), "fanrag.batch.chunks": sum(len(r.chunks) for r in batch),
            "fanrag.doc_ids": capped([r.doc.doc_id for r in batch]),
            **{f"fanrag.write.{name}_s": round(s, 6) for name, s in stores.items()}}
        emit(self._tracer, "fanrag.ingest.write", end - int(seconds * 1e9), end, self._root, "ok", attrs,
             self._links(r.doc.source for r in batch))
        await super().committed(batch)

    async def left_out(self, batch: Sequence[Ready], reasons: dict[str, str]) -> None:
        self._write_growth()  # a batch written for nobody: its seconds are not the next batch's
        await super().left_out(batch, reasons)

    # ------------------------------------------------------------------ helpers

    def _write_growth(self) -> tuple[float, dict[str, float]]:
        """Seconds the writer spent since the last batch, in all and per store."""
        st = self._stages
        grown = {k: v - self._store_s.get(k, 0.0) for k, v in st.write_stores.items()}
        seconds = st.write - self._write_s
        self._write_s, self._store_s = st.write, dict(st.write_stores)
        return seconds, grown

    def _links(self, uris: Any) -> list[Any]:
        from opentelemetry.trace import Link

        spans = {uri: o.span for uri in uris if (o := self._open.get(uri)) is not None}
        return [Link(span.get_span_context()) for span in spans.values()]

    def _close(self, uri: str, status: str) -> None:
        o = self._open.pop(uri, None)
        if o is None:
            return
        o.span.set_attributes({"fanrag.docs": len(o.docs), "fanrag.chunks": o.chunks,
                               "fanrag.doc_ids": capped(o.docs), "fanrag.outcome": _outcome(status, o)})
        if status.startswith("error"):
            o.span.set_attribute("fanrag.reason", status.partition(": ")[2])
        finish(o.span, time.time_ns(), status)


def _outcome(status: str, o: _Open) -> str:
    if status.startswith("error"):
        return "partial" if o.docs else "failed"  # a collection with some bad entries commits the rest
    return "committed" if o.docs else "unchanged"


class _Outcomes:
    """The ledger's outcomes callback, teed: each source's span ends with its outcome, then whoever
    handed the source over (if anyone) is told as before."""

    def __init__(self, traced: TracedLedger, inner: SourceOutcomes | None) -> None:
        self._traced = traced
        self._inner = inner

    def committed(self, source: SourceFile) -> None:
        self._traced._close(source.uri, "ok")
        if self._inner is not None:
            self._inner.committed(source)

    def failed(self, source: SourceFile, reason: str) -> None:
        self._traced._close(source.uri, f"error: {reason}")
        if self._inner is not None:
            self._inner.failed(source, reason)
