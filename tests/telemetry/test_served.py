"""Through a real ``fanrag serve`` configured only by the standard OpenTelemetry variables: its spans reach
an OTLP/HTTP collector (a loopback stand-in that decodes what it receives), and ``/metrics`` has the ingest
stage histograms after an ingest."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.server.conftest import TOKEN, ingest_root, running_server

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra is not installed")
pytest.importorskip("prometheus_client", reason="the server extra is not installed")


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: keeps every span it is sent, with its resource."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    collector.spans += [(resource, s) for ss in rs.scope_spans for s in ss.spans]
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[Any]:
        return [s for _, s in self.spans if s.name == name]

    def wait_for(self, name: str, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not self.named(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.named(name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory: Any) -> Iterator[SimpleNamespace]:
    root, _ = ingest_root(tmp_path_factory)
    home = tmp_path_factory.mktemp("home")
    collector = Collector()
    env = {"FANRAG_TOKEN": TOKEN, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "fanrag-test",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SDK_DISABLED": "", "OTEL_TRACES_EXPORTER": ""}
    try:
        with running_server(home, root, env) as url:
            yield SimpleNamespace(url=url, root=root, collector=collector, auth={"Authorization": f"Bearer {TOKEN}"})
    finally:
        collector.close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


def test_ingest_and_query_spans_reach_the_otlp_collector(traced_server: Any) -> None:
    s = traced_server
    r = httpx.post(s.url + "/ingest", json={"paths": ["aspirin.txt", "volcano.md"]}, headers=s.auth, timeout=120)
    assert r.status_code == 200 and r.json()["ok"] == 2, r.text
    assert httpx.post(s.url + "/query", json={"query": "volcanic ash"}, timeout=60).status_code == 200
    [query] = s.collector.wait_for("fanrag.query")
    dense = s.collector.wait_for("fanrag.branch.dense")[0]
    assert dense.parent_span_id == query.span_id and dense.trace_id == query.trace_id
    assert attrs(query)["fanrag.query.text"] == "volcanic ash"
    [ingest] = s.collector.wait_for("fanrag.ingest")
    sources = [x for x in s.collector.wait_for("fanrag.ingest.source") if x.trace_id == ingest.trace_id]
    assert sorted(Path(attrs(x)["fanrag.source"]).name for x in sources) == ["aspirin.txt", "volcano.md"]
    assert all(x.parent_span_id == ingest.span_id for x in sources)
    assert {res.get("service.name") for res, _ in s.collector.spans} == {"fanrag-test"}


def _metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_the_ingest_stage_histograms_get_observations(traced_server: Any) -> None:
    s = traced_server
    (s.root / "new.txt").write_text("Glaciers carve U-shaped valleys as they move downhill over centuries.\n")
    before = httpx.get(s.url + "/metrics").text
    r = httpx.post(s.url + "/ingest", json={"paths": ["new.txt"]}, headers=s.auth, timeout=120)
    assert r.status_code == 200 and r.json()["ok"] == 1, r.text
    after = httpx.get(s.url + "/metrics").text
    for stage in ("plan", "load_chunk", "embed", "write"):
        name = f'fanrag_ingest_stage_seconds_count{{stage="{stage}"}}'
        assert _metric(after, name) == _metric(before, name) + 1, stage
    embed_sum = 'fanrag_ingest_stage_seconds_sum{stage="embed"}'
    assert _metric(after, embed_sum) > _metric(before, embed_sum)
    for store in ("vectors", "keywords", "meta"):
        assert _metric(after, f'fanrag_ingest_write_store_seconds_count{{store="{store}"}}') >= 1, store
