"""Ingestion on Celery workers (``pip install 'fanrag[celery]'``), with Redis as broker and result backend.

    plan ─► load_chunk ─► embed ─► write        one chain per source file (a group of them)
    (queue "fanrag": any number of workers)      (queue "fanrag.write": ONE worker process)
                                          └──► finalise    the chord callback, once after every source

The embedded stores allow one writer process per index home, so writes go to their own queue, served by
a single process that keeps the stores open; load/chunk and embedding scale out on the other queue. The
chain steps run the local pipeline's parts: the same freshness decision and worker functions
(``plan_source``, ``process_part``), the embedder, and in the writer the same ``IndexWriter`` (assembly,
four-store write, commit) and ``SourceLedger`` (outcomes, summary): the chunks are the same as a local
run's. Tasks are acknowledged late and requeued if their worker dies; every step is idempotent. The
submitter (``run``) imports no task code: only workers register the tasks and their signal handlers.
"""

from __future__ import annotations

from .app import WORK_QUEUE, WRITE_QUEUE, CeleryConfig, create_app
from .run import build_canvas, finalised_count, ingest_with_celery

__all__ = ["WORK_QUEUE", "WRITE_QUEUE", "CeleryConfig", "build_canvas", "create_app", "finalised_count",
           "ingest_with_celery"]
