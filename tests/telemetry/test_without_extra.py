"""Without the otel extra, or with tracing not configured, nothing changes: queries and ingests run as
before, nothing of OpenTelemetry is imported, and an OTLP endpoint set without the extra is one warning
naming the extra, never an error."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fanrag import telemetry
from fanrag.engine import Engine
from fanrag.telemetry import setup
from tests.conftest import make_settings
from tests.telemetry.conftest import DOCS

HIDDEN = ("opentelemetry", "opentelemetry.trace", "opentelemetry.sdk", "opentelemetry.sdk.trace",
          "opentelemetry.sdk.resources", "opentelemetry.sdk.trace.export", "opentelemetry.exporter",
          "opentelemetry.exporter.otlp", "opentelemetry.exporter.otlp.proto.http",
          "opentelemetry.exporter.otlp.proto.http.trace_exporter")


@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry not installed: importing any of it raises ImportError."""
    for name in HIDDEN:
        monkeypatch.setitem(sys.modules, name, None)
    setup._env_provider.cache_clear()
    yield
    setup._env_provider.cache_clear()


def test_an_endpoint_without_the_extra_warns_once_and_changes_nothing(
        tmp_path: Path, docs: Path, no_otel: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="fanrag.telemetry"), \
            Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        assert engine.ingest([docs]).ok == len(DOCS)
        assert engine.query("aspirin side effects").hits
        assert engine.query("volcanic ash").hits
    warned = [r.getMessage() for r in caplog.records if "otel" in r.getMessage()]
    assert len(warned) == 1 and "pip install 'fanrag[otel]'" in warned[0]
    assert telemetry.tracer() is None


def test_nothing_is_imported_when_tracing_is_off(tmp_path: Path, docs: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        for var in list(os.environ):
            if var.startswith("OTEL_"):
                del os.environ[var]
        from fanrag.engine import Engine
        from tests.conftest import make_settings
        with Engine.open(settings=make_settings({str(tmp_path / "home")!r})) as engine:
            assert engine.ingest([{str(docs)!r}]).ok == {len(DOCS)}
            assert engine.query("aspirin side effects").hits
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_tracing_off_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in setup.ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    assert telemetry.tracer() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.tracer() is None  # the standard switch wins over the endpoint
