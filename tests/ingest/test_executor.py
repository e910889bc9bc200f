"""Executors by name: the registry, its errors, and a missing optional backend (no Ray needed here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fanrag.errors import ConfigError, MissingExtraError
from fanrag.ingest.executors import create_executor, parse_executor
from fanrag.ingest.executors.local import LocalExecutor

from ..conftest import make_settings


@pytest.mark.parametrize(("name", "parsed"), [
    ("local", ("local", "")),
    ("ray", ("ray", "")),
    ("ray:10.0.0.5:6379", ("ray", "10.0.0.5:6379")),
    ("ray:auto", ("ray", "auto")),
    ("ray://head:10001", ("ray", "ray://head:10001")),
])
def test_parse_executor(name: str, parsed: tuple[str, str]) -> None:
    assert parse_executor(name) == parsed


def test_local_executor_by_name(tmp_path: Path) -> None:
    ex = create_executor(make_settings(tmp_path, pipeline={"workers": 3}), embedder=object())  # type: ignore[arg-type]
    try:
        assert isinstance(ex, LocalExecutor) and ex.workers == 3
    finally:
        ex.close()


@pytest.mark.parametrize("name", ["dask", "celery:redis://x", "local:somewhere"])
def test_unknown_executor_names_the_setting_and_the_choices(tmp_path: Path, name: str) -> None:
    settings = make_settings(tmp_path, pipeline={"executor": name})
    with pytest.raises(ConfigError) as err:
        create_executor(settings, embedder=object())  # type: ignore[arg-type]
    assert err.value.field == "pipeline.executor"
    assert "local" in err.value.reason and ("ray" in err.value.reason or "address" in err.value.reason)


def test_missing_ray_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as if not installed
    settings = make_settings(tmp_path, pipeline={"executor": "ray"})
    with pytest.raises(MissingExtraError, match=r"pip install 'fanrag\[ray\]'"):
        create_executor(settings, embedder=object())  # type: ignore[arg-type]


def test_cli_executor_option_sets_pipeline_executor(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    (tmp_path / "a.md").write_text("# A\n\nSome text.")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "a.md"), "--home", str(tmp_path / "h"), "--executor", "dask"])
    assert result.exit_code == 2 and "pipeline.executor" in result.output, result.output
    for command in ("ingest", "worker"):
        assert "--executor" in runner.invoke(cli, [command, "--help"]).output


class _TwoSlots(LocalExecutor):
    """The local executor with two embed slots, each call slowed down: records how many overlap."""

    embed_slots = 2

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.active = self.most = self.calls = 0

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        import asyncio

        self.active += 1
        self.calls += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(0.2)
            return await super().embed(texts)
        finally:
            self.active -= 1


def test_the_pipeline_keeps_embed_slots_batches_in_flight_and_in_order(tmp_path: Path, embedder) -> None:
    import asyncio

    from fanrag.engine import Engine
    from fanrag.ingest.sources import PathSource
    from fanrag.ingest.pipeline import IngestPipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"d{i:02d}.md").write_text(f"# Note {i}\n\nTide table {i}: the moon raises water {i} times.\n")
    # One chunk per batch (int8 output then does not depend on batch-mates): many batches to overlap.
    settings = make_settings(tmp_path / "home", embed={"batch_size": 1, "gather": 1})
    with Engine.open(settings=settings) as engine:
        executor = _TwoSlots(engine.embedder, 2)
        try:
            summary = asyncio.run(IngestPipeline(settings, engine.stores, engine.embedder, executor).arun(
                PathSource([docs])))
        finally:
            executor.close()
        assert summary.ok == 12 and summary.failed == []
        assert executor.most == 2 and executor.calls >= 12
        # Every chunk got its own text's vector (results were not shuffled between batches).
        chunks = engine.stores.meta.get_chunks(engine.stores.meta.chunk_ids_of(
            [d.doc_id for d in engine.stores.meta.documents(status="committed")]))
        for chunk in chunks.values():
            hit = engine.stores.vectors.search(embedder.embed([chunk.text])[0], 1)[0]
            assert hit.chunk_id == chunk.chunk_id and hit.score == pytest.approx(1.0, abs=1e-3)
