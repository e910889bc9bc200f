"""The result of an ingestion run, and the progress events a display can follow.

``failed`` holds names as they are (data: a path may hold any byte); ``to_dict`` and the CLI show them
escaped (``names.shown``), one line per failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

from ..names import shown


@dataclass
class StageTimes:
    """Seconds spent per stage. ``load_chunk`` is summed over worker processes (CPU seconds of the
    fan-out); ``embed`` and ``write`` are wall seconds of their single consumers; ``write_stores`` is
    per store, summed over batches, to show that a batch costs the slowest write, not the sum."""

    plan: float = 0.0
    load_chunk: float = 0.0
    embed: float = 0.0  # busy time: with several embed calls in flight (Ray actors) it can exceed the wall time
    write: float = 0.0
    write_stores: dict[str, float] = field(default_factory=dict)


@dataclass
class IngestSummary:
    sources: int = 0
    ok: int = 0  # documents committed in this run
    unchanged: int = 0  # documents (or whole sources' documents) skipped: same content already committed
    unchanged_sources: int = 0
    removed: int = 0  # documents deleted: vanished collection entries, and pruned sources
    swept: int = 0  # documents a crashed run had left pending, removed from every store before this one
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file or uri, one-line reason)
    chunks: int = 0
    pages: int = 0
    wall_s: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)
    missing_paths: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.missing_paths else 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed"] = [{"source": shown(s), "reason": shown(r)} for s, r in self.failed]
        d["missing_paths"] = [shown(p) for p in self.missing_paths]
        d["chunks_per_s"] = round(self.chunks_per_s, 2)
        d["wall_s"] = round(self.wall_s, 3)
        d["stages"] = {k: (round(v, 3) if isinstance(v, float) else {n: round(x, 3) for n, x in v.items()})
                       for k, v in asdict(self.stages).items()}
        return d


class Progress(Protocol):
    """Receives events from the pipeline (from the event loop's thread)."""

    def planned(self, parts: int) -> None: ...

    def part_done(self, pages: int, failed: int) -> None: ...

    def committed(self, docs: int, chunks: int) -> None: ...

    def unchanged(self, docs: int) -> None: ...


class StageProgress(Progress, Protocol):
    """A display that also follows the embedding stage and each failure (the server's ingest view). These
    events are optional: subclass ``NullProgress`` for no-op defaults; a ``Progress`` without them gets
    no-ops from ``with_defaults``."""

    def embedding(self, docs: int, chunks: int, queued: int) -> None:
        """A batch of ``chunks`` chunks of ``docs`` documents (or parts of one) goes to the embedder;
        ``queued`` part results wait for the next batch."""

    def embedded(self, docs: int, chunks: int, seconds: float) -> None:
        """That batch's vectors are back after ``seconds``."""

    def failed(self, source: str, reason: str) -> None:
        """A source, or one document of it (a collection's entry), failed: its one-line reason."""


class NullProgress:
    def planned(self, parts: int) -> None:
        pass

    def part_done(self, pages: int, failed: int) -> None:
        pass

    def committed(self, docs: int, chunks: int) -> None:
        pass

    def unchanged(self, docs: int) -> None:
        pass

    def embedding(self, docs: int, chunks: int, queued: int) -> None:
        pass

    def embedded(self, docs: int, chunks: int, seconds: float) -> None:
        pass

    def failed(self, source: str, reason: str) -> None:
        pass


STAGE_EVENTS = ("embedding", "embedded", "failed")


def with_defaults(progress: Progress | None) -> StageProgress:
    """``progress`` with every event: the optional ones it lacks (it predates them) become no-ops."""
    if progress is None:
        return NullProgress()
    if all(hasattr(progress, name) for name in STAGE_EVENTS):
        return cast(StageProgress, progress)  # it has them all
    return _Filled(progress)


class _Filled(NullProgress):
    """A ``Progress`` without some stage events: the events it has, and no-ops for the rest."""

    def __init__(self, inner: Progress) -> None:
        for name in ("planned", "part_done", "committed", "unchanged", *STAGE_EVENTS):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
