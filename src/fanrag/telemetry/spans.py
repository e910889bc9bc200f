"""Small helpers shared by the query and ingest converters: fanrag's status strings as OpenTelemetry
statuses, and a span that is started and ended at times already known (``start_time``/``end_time`` in ns).

fanrag's statuses are ``ok``, ``skipped: <why>``, ``timeout...`` and ``error: <what>`` (``retrieve.trace``,
``retrieve.results``). A skipped step is not an error: its span keeps status UNSET and carries
``fanrag.skipped`` and ``fanrag.skip_reason``; a timeout or an error sets status ERROR with the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AttrValue = str | bool | int | float | list[str] | list[int]
MAX_LIST = 100  # ids listed in one attribute (a batch of thousands would swamp the backend)


def status_attributes(status: str) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"fanrag.status": status}
    if status.startswith("skipped"):
        attrs["fanrag.skipped"] = True
        attrs["fanrag.skip_reason"] = status.partition(":")[2].strip()
    return attrs


def failed(status: str) -> bool:
    return status.startswith(("error", "timeout"))


def start(tracer: Any, name: str, start_ns: int, parent: Any = None,
          attributes: Mapping[str, AttrValue] | None = None, links: list[Any] | None = None) -> Any:
    """A span begun at ``start_ns`` under ``parent`` (a span; None: the current context)."""
    from opentelemetry import trace

    context = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=context, start_time=start_ns, attributes=dict(attributes or {}),
                             links=links or None)


def finish(span: Any, end_ns: int, status: str = "ok") -> None:
    """End ``span`` at ``end_ns``; a timeout or an error (fanrag's status text) marks it ERROR."""
    from opentelemetry.trace import Status, StatusCode

    if failed(status):
        span.set_status(Status(StatusCode.ERROR, status))
    span.end(end_time=end_ns)


def emit(tracer: Any, name: str, start_ns: int, end_ns: int, parent: Any = None, status: str = "ok",
         attributes: Mapping[str, AttrValue] | None = None, links: list[Any] | None = None) -> Any:
    """A span whose times are known: started and ended at once."""
    span = start(tracer, name, start_ns, parent, {**status_attributes(status), **(attributes or {})}, links)
    finish(span, max(end_ns, start_ns), status)
    return span


def capped(ids: list[str]) -> list[str]:
    return ids[:MAX_LIST]
