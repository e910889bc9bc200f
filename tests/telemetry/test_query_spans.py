"""A query's spans in OpenTelemetry: one root, a child per branch that ran, shards under their branch,
times nested inside the root, a skipped branch marked, and nothing at all when tracing is off."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import StatusCode


def by_name(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


def test_a_query_is_one_root_with_a_child_per_branch(index: Any, spans: Any) -> None:
    result = index.engine.query("aspirin side effects")
    got = spans.get_finished_spans()
    roots = [s for s in got if s.name == "fanrag.query"]
    assert len(roots) == 1
    root = roots[0]
    assert root.parent is None and root.attributes["fanrag.query.text"] == "aspirin side effects"
    assert root.attributes["fanrag.hits"] == len(result.hits)
    named = by_name(got)
    for branch, timing in result.retrieval.branches.items():
        span = named[f"fanrag.branch.{branch}"]
        assert span.parent.span_id == root.context.span_id
        assert span.attributes["fanrag.branch"] == branch and span.attributes["fanrag.status"] == timing.status
        hits = sum(len(rl.hits) for rl in result.retrieval.lists if rl.branch == branch)
        assert span.attributes["fanrag.branch.hits"] == hits
    assert named["fanrag.branch.dense"].attributes["fanrag.branch.hits"] > 0
    for step in ("fanrag.transform", "fanrag.fuse", "fanrag.fetch", "fanrag.rerank", "fanrag.generate"):
        assert named[step].parent.span_id == root.context.span_id
    # every span lies inside the root, in the order fanrag measured
    for span in got:
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time, span.name
    assert named["fanrag.transform"].end_time <= named["fanrag.branch.dense"].start_time + 1_000
    assert named["fanrag.fuse"].start_time >= named["fanrag.branch.dense"].end_time - 1_000


def test_shard_searches_hang_under_their_branch(index: Any, spans: Any) -> None:
    index.engine.query("volcanic ash", generate=False)
    got = spans.get_finished_spans()
    dense = by_name(got)["fanrag.branch.dense"]
    shards = [s for s in got if s.name == "fanrag.shard" and s.attributes["fanrag.branch"] == "dense"]
    assert sorted(s.attributes["fanrag.shard"] for s in shards) == [0, 1]  # make_settings: two shards
    for s in shards:
        assert s.parent.span_id == dense.context.span_id
        assert dense.start_time <= s.start_time <= s.end_time <= dense.end_time
    assert "fanrag.generate" not in by_name(got)


def test_a_skipped_branch_is_marked_not_failed(index: Any, spans: Any) -> None:
    result = index.engine.query("volcanic ash europe")  # not a question: the hop branch skips
    skipped = {b: t.status for b, t in result.retrieval.branches.items() if t.status.startswith("skipped")}
    assert "hop" in skipped
    named = by_name(spans.get_finished_spans())
    for branch, status in skipped.items():
        span = named[f"fanrag.branch.{branch}"]
        assert span.attributes["fanrag.skipped"] is True
        assert span.attributes["fanrag.skip_reason"] == status.partition(":")[2].strip()
        assert span.status.status_code is StatusCode.UNSET


def test_a_failing_branch_is_an_error_span(index: Any, spans: Any, monkeypatch: Any) -> None:
    bm25 = index.engine.retriever.branches["bm25"]

    def broken(*args: Any) -> Any:
        raise RuntimeError("tantivy is gone")

    monkeypatch.setattr(bm25, "run", broken)
    result = index.engine.query("aspirin", generate=False)
    assert result.retrieval.branches["bm25"].status.startswith("error")  # dropped, the query answered
    span = by_name(spans.get_finished_spans())["fanrag.branch.bm25"]
    assert span.status.status_code is StatusCode.ERROR and "tantivy is gone" in span.status.description


def test_streaming_queries_are_traced_once(index: Any, spans: Any) -> None:
    import asyncio

    async def drain() -> None:
        async for _ in index.engine.astream("tides and the moon"):
            pass

    asyncio.run(drain())
    assert [s.name for s in spans.get_finished_spans()].count("fanrag.query") == 1


def test_no_spans_when_tracing_is_off(index: Any, monkeypatch: Any) -> None:
    from fanrag import telemetry

    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert telemetry.tracer() is None
    assert index.engine.query("aspirin", generate=False).hits
