"""Prometheus metrics of one app: query latency by stage, branch outcomes, ingest throughput and where
each ingest run spent its time (by stage, and by store for the writes).

Each app gets its own ``CollectorRegistry`` so two apps in one process (tests) do not collide. Queries
are observed from their ``QueryResult``, ingest runs from their summary: the same records that
``--explain``, the web UI and the OpenTelemetry spans (``fanrag.telemetry``) are made from.
"""

from __future__ import annotations

from typing import Any

from ..errors import require

# Retrieval lives in milliseconds: buckets from 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
# An ingest stage takes from milliseconds (one small file) to hours (a corpus): buckets from 10 ms to 3 h.
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0)
INGEST_STAGES = ("plan", "load_chunk", "embed", "write")  # IngestSummary.stages, write_stores apart


class Metrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", feature="the HTTP server's /metrics", extra="server")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.stage = prom.Histogram("fanrag_query_stage_seconds", "Query latency by stage (branch_* are the "
                                    "fan-out branches; total is the whole query)", ["stage"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queries = prom.Counter("fanrag_queries", "Queries answered, by outcome", ["outcome"], registry=r)
        self.branch = prom.Counter("fanrag_branch_results", "Branch outcomes (ok, timeout, error, skipped)",
                                   ["branch", "outcome"], registry=r)
        self.ingest_docs = prom.Counter("fanrag_ingest_documents", "Documents seen by ingestion, by outcome",
                                        ["outcome"], registry=r)
        self.ingest_chunks = prom.Counter("fanrag_ingest_chunks", "Chunks committed", registry=r)
        self.ingest_pages = prom.Counter("fanrag_ingest_pages", "Pages loaded", registry=r)
        self.ingest_seconds = prom.Counter("fanrag_ingest_seconds", "Wall time spent ingesting", registry=r)
        self.ingest_rate = prom.Gauge("fanrag_ingest_last_chunks_per_second", "Throughput of the last ingest",
                                      registry=r)
        self.ingest_stage = prom.Histogram(
            "fanrag_ingest_stage_seconds", "Seconds one ingest run spent per stage (plan and load_chunk summed "
            "over worker processes; embed and write are their consumers' busy time)", ["stage"],
            buckets=INGEST_BUCKETS, registry=r)
        self.ingest_store = prom.Histogram("fanrag_ingest_write_store_seconds", "Seconds one ingest run spent "
                                           "writing to each store (they write at once)", ["store"],
                                           buckets=INGEST_BUCKETS, registry=r)

    def observe_query(self, result: Any) -> None:
        """Record a ``QueryResult``'s stage timings and branch outcomes."""
        r = result.retrieval
        stages = {"transform": r.transform_ms, "fanout": r.fanout_ms, "fusion": r.fusion_ms, "fetch": r.fetch_ms,
                  "rerank": result.rerank_ms, "generate": result.generate_ms, "total": result.total_ms}
        stages.update({f"branch_{name}": t.ms for name, t in r.branches.items()})
        for stage, ms in stages.items():
            self.stage.labels(stage).observe(ms / 1000.0)
        for name, t in r.branches.items():
            self.branch.labels(name, t.status.split(":")[0]).inc()
        self.queries.labels("ok").inc()

    def observe_ingest(self, summary: dict[str, Any]) -> None:
        """Record an ingest summary (``IngestSummary.to_dict()``)."""
        for outcome in ("ok", "unchanged", "removed"):
            self.ingest_docs.labels("committed" if outcome == "ok" else outcome).inc(summary.get(outcome, 0))
        self.ingest_docs.labels("failed").inc(len(summary.get("failed", [])))
        self.ingest_chunks.inc(summary.get("chunks", 0))
        self.ingest_pages.inc(summary.get("pages", 0))
        self.ingest_seconds.inc(summary.get("wall_s", 0.0))
        self.ingest_rate.set(summary.get("chunks_per_s", 0.0))
        stages = summary.get("stages", {})
        for stage in INGEST_STAGES:
            self.ingest_stage.labels(stage).observe(stages.get(stage, 0.0))
        for store, seconds in stages.get("write_stores", {}).items():
            self.ingest_store.labels(store).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
