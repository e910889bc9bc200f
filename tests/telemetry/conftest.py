"""Telemetry fixtures: fanrag's spans into the SDK's in-memory exporter (``telemetry.use``), and a small
index of three documents shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag import telemetry
from fanrag.engine import Engine
from tests.conftest import make_settings

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

DOCS = {
    "aspirin.txt": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes. Common side effects of "
                   "aspirin include stomach bleeding and ulcers.\n",
    "volcano.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Volcanic ash from Mount "
                  "Etna can disrupt air travel across Europe.\n",
    "tides.txt": "The moon's gravity raises two tides a day on most coasts.\n",
}


@pytest.fixture
def spans() -> Iterator[Any]:
    """The in-memory exporter fanrag's spans go to during the test (tracing is off before and after)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use(provider)
    try:
        yield exporter
    finally:
        telemetry.use(None)
        provider.shutdown()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def index(tmp_path: Path, docs: Path) -> Iterator[SimpleNamespace]:
    """An engine over the three documents, ingested before tracing is on."""
    with Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        assert engine.ingest([docs]).ok == len(DOCS)
        yield SimpleNamespace(engine=engine, docs=docs)
