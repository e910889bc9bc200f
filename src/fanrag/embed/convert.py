"""BERT weights -> ONNX sentence encoder, built node by node (no torch exporter), then int8.

The weights come from safetensors or from another ONNX export's initializers (dequantised, see
``weights.py``); either way fanrag builds its own graph, so the packaged int8 export is re-quantised by
fanrag's recipe below rather than run as shipped (its weight-only int8 graph was slower).

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes) and returns
``sentence_embedding`` (float32, [batch, hidden]): pooled and L2-normalised inside ONNX Runtime, so one
``session.run`` is the whole embedder. It also returns ``token_embeddings`` ([batch, seq, hidden], the last
hidden state before pooling, padding rows included): ORT computes it anyway, and a caller that does not
ask for it does not pay for a copy. Single-segment input only: the token-type-0 embedding is folded into
the position embeddings, which is exactly what BERT computes when ``token_type_ids`` is all zeros.

Files are cached under ``<cache>/models/<name>-<key>/`` where the key hashes the weights, the config and
``CONVERTER_VERSION``; every file is written to a temporary name and renamed, so two processes that
convert at the same time each leave a complete file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import EmbeddingError
from .models import ModelDir, cache_root
from .weights import load_weights

CONVERTER_VERSION = "2"  # bump when the graph or the quantisation recipe changes (2: token_embeddings)
OPSET = 17  # LayerNormalization is a standard op from 17 on
MASK_BIAS = -10000.0  # exp(-1e4) underflows to exactly 0.0: padded keys get no attention weight
_FFN_DOWN = re.compile(r"layer\.\d+\.output\.dense\.weight_t$")  # not attention.output.dense


def cache_key(model: ModelDir) -> str:
    """Hash of the weights file, the configs and the converter version: a model whose weights come from
    another source (safetensors or an ONNX export) builds into another folder."""
    h = hashlib.blake2b(digest_size=8)
    h.update(CONVERTER_VERSION.encode())
    h.update((model.path / "config.json").read_bytes())
    h.update(model.pooling.encode())
    with open(model.weights, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def model_cache_dir(model: ModelDir) -> Path:
    return cache_root() / "models" / f"{model.name}-{cache_key(model)}"


def ensure_onnx(model: ModelDir, quantize: bool) -> Path:
    """Path of the cached fp32 or int8 ONNX file for ``model``, converting once if it is missing."""
    folder = model_cache_dir(model)
    fp32 = folder / "model.fp32.onnx"
    if not fp32.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddingError(f"cannot create the model cache {folder} ({exc}); "
                                 "point FANRAG_CACHE at a writable directory") from exc
        _write_atomic(fp32, lambda tmp: _save(build_graph(model), tmp))
    if not quantize:
        return fp32
    int8 = folder / "model.int8.onnx"
    if not int8.is_file():
        _write_atomic(int8, lambda tmp: quantize_int8(fp32, tmp))
    return int8


def _write_atomic(dest: Path, write: Callable[[Path], None]) -> None:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must be readable by other users
        os.replace(tmp, dest)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, EmbeddingError):
            raise
        raise EmbeddingError(f"converting the embedding model to {dest} failed: {exc}") from exc


def _save(graph_model, path: Path) -> None:
    import onnx

    onnx.save_model(graph_model, str(path))


def quantize_int8(src: Path, dest: Path) -> None:
    """Dynamic int8 quantisation of the weight MatMuls, one scale per output channel.

    Activations are quantised per tensor at run time, and the input of each FFN down-projection (the GELU
    output) has outliers that make that lossy: on 50 SciFact texts, quantising every MatMul gave cosine to
    fp32 of mean 0.9939 / min 0.9878; keeping the six down-projections in fp32 gives 0.9969 / 0.9944 and
    still quantises 2/3 of the linear FLOPs. Embeddings, LayerNorm and attention products stay fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node
                 if n.op_type == "MatMul" and _FFN_DOWN.search(n.input[1])]
    with _quiet_root_warning("Please consider to run pre-processing"):
        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)


@contextmanager
def _quiet_root_warning(prefix: str) -> Iterator[None]:
    """Drop one known-irrelevant warning that ORT logs on the root logger (its pre-processing step
    targets CNN shape inference and does not change this graph's quantisation)."""
    root = logging.getLogger()
    drop = _DropPrefix(prefix)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _Weights:
    """Float32 tensors by their BERT name, from safetensors or an ONNX export (see ``weights.py``)."""

    def __init__(self, path: Path) -> None:
        self._t = load_weights(path)

    def __call__(self, name: str) -> np.ndarray:
        try:
            return self._t[name]
        except KeyError:
            raise EmbeddingError(f"weights have no tensor {name!r}: not a BERT checkpoint?") from None


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str = "", **attrs) -> str:
        self._n += 1
        out = output or f"{op_type.lower()}_{self._n}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _config(model: ModelDir) -> dict:
    cfg = json.loads((model.path / "config.json").read_text("utf-8"))
    if cfg.get("model_type", "bert") not in ("bert",) and "Bert" not in "".join(cfg.get("architectures", [])):
        raise EmbeddingError(f"{model.path}: model_type {cfg.get('model_type')!r} is not BERT")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise EmbeddingError(f"{model.path}: hidden_act {cfg['hidden_act']!r} not supported (only gelu)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise EmbeddingError(f"{model.path}: only absolute position embeddings are supported")
    return cfg


def build_graph(model: ModelDir):
    """The whole sentence encoder as an ONNX model (float32)."""
    from onnx import TensorProto, helper

    cfg = _config(model)
    w = _Weights(model.weights)
    b = _Builder()
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))

    x = _embeddings(b, w, eps)
    mask = b.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = _attention_bias(b, mask)
    for i in range(int(cfg["num_hidden_layers"])):
        x = _layer(b, w, f"encoder.layer.{i}.", x, bias, hidden, heads, eps)
    x = b.op("Identity", x, output="token_embeddings")
    _pool_and_normalise(b, x, mask, model.pooling, output="sentence_embedding")

    graph = helper.make_graph(
        b.nodes, "fanrag_sentence_encoder",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
                 helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializer=b.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="fanrag", producer_version=CONVERTER_VERSION)
    onnx_model.ir_version = 8  # widely readable; opset 17 needs IR >= 8
    return onnx_model


def _layer_norm(b: _Builder, w: _Weights, prefix: str, x: str, eps: float) -> str:
    return b.op("LayerNormalization", x, b.const(prefix + "weight", w(prefix + "weight")),
                b.const(prefix + "bias", w(prefix + "bias")), axis=-1, epsilon=eps)


def _linear(b: _Builder, w: _Weights, prefix: str, x: str) -> str:
    # torch Linear stores [out, in]; MatMul wants [in, out]. The transposed weight is what gets quantised.
    weight = b.const(prefix + "weight_t", w(prefix + "weight").T)
    return b.op("Add", b.op("MatMul", x, weight), b.const(prefix + "bias", w(prefix + "bias")))


def _embeddings(b: _Builder, w: _Weights, eps: float) -> str:
    words = b.op("Gather", b.const("word_embeddings", w("embeddings.word_embeddings.weight")), "input_ids")
    positions = w("embeddings.position_embeddings.weight") + w("embeddings.token_type_embeddings.weight")[0]
    seq_len = b.op("Slice", b.op("Shape", "input_ids"), b.const("one", np.array([1], np.int64)),
                   b.const("two", np.array([2], np.int64)))
    pos = b.op("Slice", b.const("position_embeddings", positions), b.const("zero", np.array([0], np.int64)),
               seq_len, b.const("zero_axis", np.array([0], np.int64)))
    return _layer_norm(b, w, "embeddings.LayerNorm.", b.op("Add", words, pos), eps)


def _attention_bias(b: _Builder, mask: str) -> str:
    """[batch, 1, 1, seq]: 0 for real tokens, MASK_BIAS for padding."""
    inverted = b.op("Sub", b.const("f_one", np.array(1.0, np.float32)), mask)
    scaled = b.op("Mul", inverted, b.const("mask_bias", np.array(MASK_BIAS, np.float32)))
    return b.op("Unsqueeze", scaled, b.const("axes_1_2", np.array([1, 2], np.int64)))


def _layer(b: _Builder, w: _Weights, p: str, x: str, bias: str, hidden: int, heads: int, eps: float) -> str:
    head_dim = hidden // heads
    split = b.const(p + "split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge = b.const(p + "merge_shape", np.array([0, 0, hidden], np.int64))

    def heads_of(name: str, perm: list[int]) -> str:
        return b.op("Transpose", b.op("Reshape", _linear(b, w, p + f"attention.self.{name}.", x), split),
                    perm=perm)

    q = heads_of("query", [0, 2, 1, 3])  # [B, H, S, D]
    k = heads_of("key", [0, 2, 3, 1])  # [B, H, D, S]
    v = heads_of("value", [0, 2, 1, 3])
    scores = b.op("Mul", b.op("MatMul", q, k), b.const(p + "scale", np.array(head_dim ** -0.5, np.float32)))
    probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1)
    context = b.op("Reshape", b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge)
    attn = _linear(b, w, p + "attention.output.dense.", context)
    x = _layer_norm(b, w, p + "attention.output.LayerNorm.", b.op("Add", attn, x), eps)

    inner = _linear(b, w, p + "intermediate.dense.", x)
    gelu = b.op("Mul", b.op("Mul", inner, b.const(p + "half", np.array(0.5, np.float32))),
                b.op("Add", b.const(p + "one", np.array(1.0, np.float32)),
                     b.op("Erf", b.op("Div", inner, b.const(p + "sqrt2", np.array(2 ** 0.5, np.float32))))))
    out = _linear(b, w, p + "output.dense.", gelu)
    return _layer_norm(b, w, p + "output.LayerNorm.", b.op("Add", out, x), eps)


def _pool_and_normalise(b: _Builder, x: str, mask: str, pooling: str, output: str) -> str:
    if pooling == "cls":
        pooled = b.op("Squeeze", b.op("Slice", x, b.const("p0", np.array([0], np.int64)),
                                      b.const("p1", np.array([1], np.int64)),
                                      b.const("p_axis", np.array([1], np.int64))),
                      b.const("p_sq", np.array([1], np.int64)))
    else:
        mask = b.op("Unsqueeze", mask, b.const("axis_m1", np.array([-1], np.int64)))  # [B, S, 1]
        axis1 = b.const("axis_1", np.array([1], np.int64))
        total = b.op("ReduceSum", b.op("Mul", x, mask), axis1, keepdims=0)
        count = b.op("Max", b.op("ReduceSum", mask, axis1, keepdims=0),
                     b.const("min_count", np.array(1e-9, np.float32)))
        pooled = b.op("Div", total, count)
    squares = b.op("ReduceSum", b.op("Mul", pooled, pooled), b.const("axis_last", np.array([-1], np.int64)),
                   keepdims=1)
    norm = b.op("Max", b.op("Sqrt", squares), b.const("min_norm", np.array(1e-12, np.float32)))
    return b.op("Div", pooled, norm, output=output)
