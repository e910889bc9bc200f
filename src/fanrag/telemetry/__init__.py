"""OpenTelemetry traces of fanrag's queries and ingest runs, from the records fanrag already keeps.

fanrag times its own steps for ``--explain``, the JSON result and the web UI (``retrieve.trace``: a
query's spans; ``ingest.ledger``: an ingest run's events). This package turns those records into
OpenTelemetry spans, so that tracing adds no second set of timers to the hot paths:

    query     ``record_query(result)`` where the retriever builds a ``QueryResult``: the spans already
              measured are emitted afterwards with their real start and end times (``query.py``)
    ingest    ``ingest.run`` decorates ``IngestPipeline.arun`` (the root span), and ``ingest.ledger``
              builds the run's source ledger, whose events become source, part, embed and write spans

Whether spans are made, and where they go, is decided at each query or run (``setup.py``): an explicit
``use(provider)``, else the app's own configured SDK provider, else OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set (the ``otel`` extra), else nothing. When tracing is off, each hook costs a few dictionary look-ups and
nothing of OpenTelemetry is imported. Span names and attributes: docs/observability.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .setup import tracer, use

if TYPE_CHECKING:
    from ..retrieve.results import QueryResult

__all__ = ["record_query", "tracer", "use"]

log = logging.getLogger(__name__)


def record_query(result: QueryResult) -> QueryResult:
    """Emit ``result``'s spans when tracing is on (the query ends now); returns ``result``."""
    t = tracer()
    if t is not None:
        from .query import export

        try:
            export(t, result)
        except Exception:  # a tracing fault must not fail the query it describes
            log.warning("could not record the query's spans", exc_info=True)
    return result
