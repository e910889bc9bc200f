"""Spans: when each step of one query ran, in milliseconds from its start. One record feeds ``--explain``,
the web UI's live diagram, the JSON result and (with the ``otel`` extra) OpenTelemetry.

    transform ─ branch:dense ┬ shard:dense:0      names say what ran; ``parent`` nests a shard search
                             └ shard:dense:1      under the branch that asked for it
              branch:bm25
              branch:graph
    fuse ─ fetch ─ rerank ─ generate

A branch runs in a pool thread and its shard searches in another pool, so spans are recorded from
several threads into one ``Recorder``; ``current`` hands the query's recorder to those threads through a
context variable (``Retriever._thread`` runs each call in a copy of the query's context). A result keeps
a snapshot taken when it is returned: a branch still running past its timeout cannot add to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Span:
    name: str
    start_ms: float
    end_ms: float
    status: str = "ok"
    parent: str = ""

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "start_ms": round(self.start_ms, 3), "end_ms": round(self.end_ms, 3),
                               "status": self.status}
        if self.parent:
            out["parent"] = self.parent
        return out


class Recorder:
    """Thread-safe span collector for one query; times are ms since ``t0`` (a ``perf_counter`` value)."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0

    def add(self, name: str, start_ms: float, end_ms: float, status: str = "ok", parent: str = "") -> None:
        with self._lock:
            self._spans.append(Span(name, start_ms, end_ms, status, parent))

    @contextmanager
    def span(self, name: str, parent: str = "") -> Iterator[None]:
        start, status = self.now(), "ok"
        try:
            yield
        except BaseException as exc:
            status = f"error: {type(exc).__name__}"
            raise
        finally:
            self.add(name, start, self.now(), status, parent)

    def snapshot(self) -> list[Span]:
        """The spans so far, by start time (a copy: later spans do not change it)."""
        with self._lock:
            return sorted(self._spans, key=lambda s: (s.start_ms, s.name))


current: ContextVar[Recorder | None] = ContextVar("fanrag_query_recorder", default=None)


def traced(name: str, parent: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` recorded as a span of the current query (just ``fn(*args)`` outside one)."""
    rec = current.get()
    if rec is None:
        return fn(*args)
    with rec.span(name, parent):
        return fn(*args)
