"""Where spans go when the app has configured OpenTelemetry itself: its global SDK provider, with the
query's root span under the app's current span (run in a fresh process: a global provider is set once)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_an_app_configured_provider_receives_the_spans_under_its_own_span(tmp_path: Path, docs: Path) -> None:
    script = textwrap.dedent(f"""
        import os
        for var in list(os.environ):
            if var.startswith("OTEL_"):
                del os.environ[var]
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        from fanrag.engine import Engine
        from tests.conftest import make_settings
        with Engine.open(settings=make_settings({str(tmp_path / "home")!r})) as engine:
            engine.ingest([{str(docs)!r}])
            with trace.get_tracer("app").start_as_current_span("app.request") as request:
                engine.query("aspirin side effects", generate=False)
        spans = {{s.name: s for s in exporter.get_finished_spans()}}
        query = spans["fanrag.query"]
        assert query.parent.span_id == request.get_span_context().span_id, "the query joins the app's span"
        assert spans["fanrag.branch.dense"].parent.span_id == query.context.span_id
        assert spans["fanrag.ingest"].parent is None and "fanrag.ingest.source" in spans
        print("ok")
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
