"""Shared fixtures. The embedder is the real default (ONNX int8 MiniLM from the installed package);
its converted model is cached per machine, so only the first test session pays for the conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanrag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def make_settings(home: Path, **sections: dict) -> Settings:
    base = {"pipeline": {"workers": 2}, "hnsw": {"shards": 2}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Settings.load(home=home, overrides=base, env={})


@pytest.fixture(scope="session")
def embedder():
    from fanrag.embed import create_embedder

    emb = create_embedder(Settings().embed)
    yield emb
    emb.close()


@pytest.fixture
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    return SCIFACT
