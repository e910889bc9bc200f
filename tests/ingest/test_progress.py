"""The progress events of an ingest: the stage events (embedding batches, failures with their reasons) that
the server's ingest view follows, and a ``Progress`` written before them, which keeps working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.ingest.summary import NullProgress, with_defaults


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name in ("planned", "part_done", "committed", "unchanged", "embedding", "embedded", "failed"):
            return lambda *args: self.events.append((name, args))
        return super().__getattribute__(name)

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.events if n == name]


class OldProgress:
    """A display that knows the first four events only."""

    def __init__(self) -> None:
        self.parts = self.docs = 0

    def planned(self, parts: int) -> None:
        self.parts += parts

    def part_done(self, pages: int, failed: int) -> None:
        pass

    def committed(self, docs: int, chunks: int) -> None:
        self.docs += docs

    def unchanged(self, docs: int) -> None:
        pass


@pytest.fixture(scope="module")
def docs(tmp_path_factory: Any) -> Path:
    d = tmp_path_factory.mktemp("docs")
    (d / "a.txt").write_text("Glaciers are slow rivers of ice that carve valleys.\n")
    (d / "b.md").write_text("# Deserts\n\nDeserts get less than 250 mm of rain a year.\n")
    (d / "bad.pdf").write_bytes(b"%PDF-1.7 not a pdf")
    return d


def test_stage_events_follow_the_batches_and_name_each_failure(docs: Path, tmp_path: Path) -> None:
    progress = Recorder()
    with Engine.open(home=tmp_path / "home") as engine:
        summary = engine.ingest([docs], progress=progress)
    assert summary.ok == 2 and len(summary.failed) == 1
    batches, embedded, committed = progress.of("embedding"), progress.of("embedded"), progress.of("committed")
    assert batches and len(batches) == len(embedded)
    assert sum(c for _, c, _ in batches) == sum(c for _, c, _ in embedded) == sum(c for _, c in committed)
    assert sum(d for d, _, _ in batches) == 2 and all(q >= 0 for _, _, q in batches)
    assert all(s >= 0 for _, _, s in embedded)
    (failed,) = progress.of("failed")
    assert failed[0].endswith("bad.pdf") and failed == summary.failed[0]  # the summary's line, as it is
    names = [n for n, _ in progress.events]
    assert names.index("embedding") < names.index("embedded") < names.index("committed")


def test_a_progress_without_the_stage_events_still_gets_its_own(docs: Path, tmp_path: Path) -> None:
    old = OldProgress()
    with Engine.open(home=tmp_path / "home") as engine:
        summary = engine.ingest([docs], progress=old)
    assert summary.ok == 2 and old.docs == 2 and old.parts == 2  # bad.pdf fails before it is planned
    filled = with_defaults(old)
    filled.embedding(1, 2, 3)  # a no-op, not an AttributeError
    filled.committed(1, 1)
    assert old.docs == 3
    assert isinstance(with_defaults(None), NullProgress)
    full = Recorder()
    assert with_defaults(full) is full
