"""The front door: Engine.open in both modes, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fanrag.engine
from fanrag.engine import Engine
from fanrag.errors import StoreError
from tests.conftest import make_settings


class Renamed:
    """The real embedder under another model's name (same dimension): a same-dimension model swap."""

    def __init__(self, inner: Any, name: str) -> None:
        self._inner, self.name, self.dim = inner, name, inner.dim

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_opening_an_index_with_another_model_is_refused_naming_both(tmp_path: Path, mode: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "home")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Alpha particles are helium nuclei.")
    with Engine.open(settings=settings) as engine:
        built_with = engine.embedder.name
        assert engine.ingest([tmp_path / "docs"]).ok == 1
    real = fanrag.engine._create_embedder
    monkeypatch.setattr(fanrag.engine, "_create_embedder", lambda s: Renamed(real(s), "onnx-int8/other-model"))
    with pytest.raises(StoreError) as refused:
        Engine.open(settings=settings, mode=mode)
    assert built_with in str(refused.value) and "onnx-int8/other-model" in str(refused.value)
    monkeypatch.undo()
    Engine.open(settings=settings, mode="write").close()  # the refused open left no lock behind


def test_read_mode_creates_nothing_and_close_stops_the_retriever(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no index"):
        Engine.open(tmp_path / "absent", mode="read")
    assert not (tmp_path / "absent").exists()
    with Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        retriever = engine.retriever
        assert engine.retriever is retriever  # built once
    with pytest.raises(RuntimeError):  # its thread pools are shut down with the engine
        retriever._pool.submit(print)
    with pytest.raises(ValueError, match="mode"):
        Engine.open(tmp_path / "home", mode="append")  # type: ignore[arg-type]
