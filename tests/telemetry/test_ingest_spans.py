"""An ingest run's spans: one root, a span per source with its load/chunk parts under it, embed and write
batches linked to the sources they carry, failures as ERROR with their reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from fanrag.engine import Engine
from tests.conftest import make_settings
from tests.telemetry.conftest import DOCS


def test_an_ingest_has_stage_spans_per_document(tmp_path: Path, docs: Path, spans: Any) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    with Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        summary = engine.ingest([docs])
    assert summary.ok == len(DOCS) and len(summary.failed) == 1
    got = spans.get_finished_spans()
    root = next(s for s in got if s.name == "fanrag.ingest")
    assert root.parent is None
    assert root.attributes["fanrag.committed"] == len(DOCS) and root.attributes["fanrag.failed"] == 1
    assert root.attributes["fanrag.chunks"] == summary.chunks
    assert root.status.status_code is StatusCode.ERROR  # a file failed: the run's exit code is 1
    sources = {Path(s.attributes["fanrag.source"]).name: s for s in got if s.name == "fanrag.ingest.source"}
    assert set(sources) == {*DOCS, "broken.pdf"}
    for name in DOCS:
        src = sources[name]
        assert src.parent.span_id == root.context.span_id
        assert src.attributes["fanrag.outcome"] == "committed" and src.attributes["fanrag.docs"] == 1
        assert src.attributes["fanrag.chunks"] >= 1 and len(src.attributes["fanrag.doc_ids"]) == 1
        parts = [s for s in got if s.name == "fanrag.ingest.load_chunk" and s.parent.span_id == src.context.span_id]
        assert len(parts) == 1 and parts[0].attributes["fanrag.chunks"] == src.attributes["fanrag.chunks"]
        assert parts[0].attributes["fanrag.doc_ids"] == src.attributes["fanrag.doc_ids"]
        for stage in ("fanrag.ingest.embed", "fanrag.ingest.write"):  # each document is in one batch of each
            carrying = [s for s in got if s.name == stage
                        and src.context.span_id in {link.context.span_id for link in s.links}]
            assert len(carrying) == 1, stage
            assert src.attributes["fanrag.doc_ids"][0] in carrying[0].attributes["fanrag.doc_ids"]
    bad = sources["broken.pdf"]
    assert bad.status.status_code is StatusCode.ERROR and bad.attributes["fanrag.outcome"] == "failed"
    assert bad.attributes["fanrag.reason"]
    batches = [s for s in got if s.name in ("fanrag.ingest.embed", "fanrag.ingest.write")]
    assert sum(s.attributes["fanrag.batch.chunks"] for s in batches if s.name.endswith("write")) == summary.chunks
    for span in got:  # everything inside the run
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time, span.name
    write = next(s for s in batches if s.name == "fanrag.ingest.write")
    assert {"fanrag.write.vectors_s", "fanrag.write.keywords_s", "fanrag.write.meta_s"} <= set(write.attributes)


def test_an_unchanged_source_is_told_as_such(tmp_path: Path, docs: Path, spans: Any) -> None:
    settings = make_settings(tmp_path / "home")
    with Engine.open(settings=settings) as engine:
        engine.ingest([docs])
        spans.clear()
        assert engine.ingest([docs]).unchanged == len(DOCS)
    outcomes = [s.attributes["fanrag.outcome"] for s in spans.get_finished_spans() if s.name == "fanrag.ingest.source"]
    assert outcomes == ["unchanged"] * len(DOCS)


def test_a_run_that_raises_ends_its_root_as_an_error(tmp_path: Path, docs: Path, spans: Any,
                                                     monkeypatch: Any) -> None:
    import fanrag.ingest.writer

    async def broken(self: Any) -> int:
        raise RuntimeError("the sweep failed")

    monkeypatch.setattr(fanrag.ingest.writer.IndexWriter, "sweep", broken)
    with Engine.open(settings=make_settings(tmp_path / "home")) as engine, \
            pytest.raises(RuntimeError, match="the sweep failed"):
        engine.ingest([docs])
    root = next(s for s in spans.get_finished_spans() if s.name == "fanrag.ingest")
    assert root.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in root.events)
