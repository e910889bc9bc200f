"""The app ``celery -A fanrag.ingest.celery.worker worker ...`` runs, configured from the environment
(see ``fanrag.ingest.celery.app``), with the ingestion tasks registered."""

from __future__ import annotations

from .app import create_app

app = create_app(include_tasks=True)
