"""The embedding cache under Celery: the writer stores every chunk's entry (it did not see the embedding),
and the embed workers look each source's texts up before embedding (``embed/cache.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fanrag.engine import Engine

pytest.importorskip("celery", reason="Celery tests need: pip install 'fanrag[celery]'")

from fanrag.ingest.celery import ingest_with_celery

from .test_celery import WAIT_S, _settings, broker, workers  # noqa: F401 - fixtures

NOTES = " ".join(f"Note {i}: the tide at harbour {i} turned at {i % 12} o'clock." for i in range(200))


def _stats(home: Path) -> dict:
    with Engine.open(home, mode="read") as engine:
        return engine.stores.meta.stats()


def test_celery_writer_stores_and_workers_look_up(tmp_path: Path, broker: str, workers) -> None:  # noqa: F811
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    notes = corpus / "notes.txt"
    notes.write_text(NOTES, encoding="utf-8")
    settings = _settings(tmp_path / "home")
    first = ingest_with_celery([corpus], settings, broker_url=broker, timeout=WAIT_S)
    assert first.failed == [] and first.ok == 1
    stats = _stats(settings.home)
    assert stats["embed_cache"] == stats["chunks"] > 2  # the writer stored every chunk's vector

    # Every entry now holds a marker: a chunk served from the cache gets the marker as its vector.
    marker = np.zeros(384, np.float32)
    marker[0] = 1.0
    with sqlite3.connect(settings.home / "meta.sqlite", timeout=30) as conn:
        conn.execute("UPDATE embed_cache SET vector = ?", (marker.tobytes(),))
    notes.write_text(NOTES + "\n\nA last note, added later, about the moon.", encoding="utf-8")
    second = ingest_with_celery([corpus], settings, broker_url=broker, timeout=WAIT_S)
    assert second.failed == [] and second.ok == 1
    with Engine.open(settings.home, mode="read") as engine:
        n = engine.stores.meta.stats()["chunks"]
        served = [h for h in engine.stores.vectors.search(marker, n) if h.score > 0.999]
    assert 0 < len(served) < n  # the unchanged chunks came from the cache, the changed one was embedded
