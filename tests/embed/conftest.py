"""Shared fixtures. The ONNX embedders use the per-machine model cache (the first session on a fresh
machine converts, ~5 s); the cache tests themselves run against an empty temporary cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanrag.embed.onnx import OnnxEmbedder
from fanrag.settings import EmbedSettings

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact" / "corpus.jsonl"


@pytest.fixture(scope="session")
def onnx_int8() -> Iterator[OnnxEmbedder]:
    embedder = OnnxEmbedder(EmbedSettings(quantize=True, threads=1, batch_size=16))
    yield embedder
    embedder.close()


@pytest.fixture(scope="session")
def onnx_fp32() -> Iterator[OnnxEmbedder]:
    embedder = OnnxEmbedder(EmbedSettings(quantize=False, threads=1, batch_size=16))
    yield embedder
    embedder.close()


def _scifact(n: int) -> list[dict]:
    if not SCIFACT.is_file():
        pytest.skip(f"SciFact corpus not found at {SCIFACT}")
    with SCIFACT.open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


@pytest.fixture(scope="session")
def varied_texts() -> list[str]:
    """~50 real texts of very different lengths: titles, first sentences, whole abstracts (past the
    256-token limit, so truncation is exercised), and a few hand-written queries and odd inputs."""
    docs = _scifact(40)
    titles = [d["title"] for d in docs[:15]]
    sentences = [d["text"].split(". ")[0] + "." for d in docs[15:30]]
    abstracts = [f"{d['title']} {d['text']}" for d in docs[30:40]]
    written = [
        "What causes insulin resistance in type 2 diabetes?",
        "Vitamin D deficiency is associated with higher mortality.",
        "CRISPR-Cas9 off-target effects in human embryos",
        "Does aspirin reduce the risk of colorectal cancer by 20%?",
        "Les cellules souches pluripotentes induites (iPSC) en médecine régénérative.",
        "BRCA1/BRCA2 mutations, p53 and DNA repair: a review",
        "The quick brown fox jumps over the lazy dog.",
        "Mice lacking TNF-α were protected from LPS-induced septic shock (n = 12, p < 0.01).",
        "How many people worldwide are infected with hepatitis B?",
        "Smoking cessation reduces cardiovascular events within five years.",
    ]
    return titles + sentences + abstracts + written
