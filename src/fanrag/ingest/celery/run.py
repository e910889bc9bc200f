"""Submit an ingestion run to Celery workers and wait for its summary::

    summary = ingest_with_celery(["docs/"], "my-index", broker_url="redis://127.0.0.1:6379/0")

The run is ``chord(group(plan | load_chunk | embed | write, one chain per source), finalise)``: sources
proceed independently, the one writer commits each as its chain reaches it, and ``finalise`` runs once
after the last one to checkpoint the stores and sum up. The submitter only walks the paths: workers read
the files from a filesystem they share with it, and the settings travel with the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import JobError
from ...settings import Settings
from ..sources import PathSource, SourceFile
from ..summary import IngestSummary
from .app import EMBED, FINALISE, LOAD_CHUNK, PLAN, WRITE, CeleryConfig, create_app
from .messages import RunInfo, finalised_key
from .records import summary_from_dict

if TYPE_CHECKING:
    from celery import Celery  # type: ignore[import-untyped]
    from celery.canvas import Signature  # type: ignore[import-untyped]


def build_canvas(app: Celery, sources: Sequence[SourceFile], run: RunInfo) -> Signature:
    """``chord(group(chain per source), finalise)``; with no sources, just ``finalise([])``."""
    from celery import chain, chord, group  # type: ignore[import-untyped]

    body = app.signature(FINALISE, args=(run,))
    if not sources:
        return app.signature(FINALISE, args=([], run))
    chains = [chain(app.signature(PLAN, args=(src, run)), app.signature(LOAD_CHUNK), app.signature(EMBED),
                    app.signature(WRITE)) for src in sources]
    return chord(group(chains), body)


def ingest_with_celery(paths: Iterable[str | Path], settings: Settings | str | Path | None = None, *,
                       broker_url: str | None = None, backend_url: str | None = None,
                       timeout: float | None = 3600.0, prune: bool = False, password: str | None = None,
                       run_id: str | None = None, config: CeleryConfig | None = None) -> IngestSummary:
    """Ingest ``paths`` into the index ``settings`` describes (a Settings, or its home) through Celery
    workers, and return the run's summary. Raises JobError if the run does not finish within ``timeout``."""
    from celery.exceptions import TimeoutError as CeleryTimeout  # type: ignore[import-untyped]

    if not isinstance(settings, Settings):
        settings = Settings.load(home=settings)
    settings = settings.replace(home=settings.home.resolve())  # one path for every worker
    cfg = config or CeleryConfig.from_env(broker_url=broker_url, backend_url=backend_url)
    source = PathSource(paths, password=password, exclude=[settings.home])
    sources = _unique(source)
    run = RunInfo(run_id or uuid.uuid4().hex, settings, prune)
    app = create_app(cfg)
    t0 = time.perf_counter()
    try:
        result = build_canvas(app, sources, run).apply_async()
        try:
            data = result.get(timeout=timeout)
        except CeleryTimeout as exc:
            raise JobError(f"Celery run {run.run_id}: not finished after {timeout} s; are workers consuming "
                           "the queues 'fanrag' and 'fanrag.write' on this broker?") from exc
    finally:
        app.close()
    summary = summary_from_dict(data)
    summary.missing_paths = list(source.missing)
    summary.failed.extend((p, "no such file or directory") for p in source.missing)
    summary.wall_s = time.perf_counter() - t0
    return summary


def finalised_count(run_id: str, config: CeleryConfig | None = None) -> int:
    """How many times the run's chord callback has run (1 once it is done)."""
    app = create_app(config)
    try:
        value = app.backend.client.get(finalised_key(run_id))
    finally:
        app.close()
    return int(value or 0)


def _unique(source: PathSource) -> list[SourceFile]:
    """A file named twice (a directory and a file in it) is one chain."""
    seen: dict[str, SourceFile] = {}
    for src in source:
        seen.setdefault(src.uri, src)
    return list(seen.values())
