"""The default embedder: a sentence-transformers BERT model run by ONNX Runtime, int8 by default.

The model is converted once from its weights (safetensors, or the packaged int8 ONNX export dequantised;
see ``convert.py`` and ``weights.py``) and cached; afterwards creating an embedder costs hashing the
weights file (~0.1 s for MiniLM) and opening the session. Tokenising happens once per ``embed`` call with
the Rust ``tokenizers`` library; the encodings are sorted by token count and padded per batch to the
longest member.

``embed_tokens`` returns the per-token vectors (the last hidden state, L2-normalised per token) for
late-interaction scoring (MaxSim); the same session computes them, so it costs no second model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EmbeddingError
from ..settings import EmbedSettings
from .base import TokenizerSpec
from .batching import embed_sorted, l2_normalise
from .convert import ensure_onnx
from .models import open_model_dir

SPECIAL_TOKENS = 2  # [CLS] and [SEP]


# Default batch sizes, measured (800 SciFact chunks of ~850 characters, 2 threads, length-sorted batches):
# int8 52.6 chunks/s at batch 1, 56.2 at 4, 50.1 at 32; fp32 34.3 at 1, 36.8 at 8, 33.4 at 32. int8 runs
# one input at a time because its activations are quantised per batch (DynamicQuantizeLinear): in a
# batch, a chunk's vector depends on its batch-mates (up to 0.024 apart, cosine 0.993, batch 1 vs 32),
# and the pipeline batches whatever is queued, so two runs of the same input would store different
# vectors. At batch 1 a vector depends on its own text only. On all of SciFact (bench/ingest.py) the
# embed-only floor took 205-217 s at batch 1 vs 203 s at 32, and the ingest's peak RSS halved.
INT8_BATCH = 1
FP32_BATCH = 8

class OnnxEmbedder:
    """Embedder protocol over an ONNX Runtime session whose graph ends in pooling + L2 normalisation."""

    def __init__(self, settings: EmbedSettings) -> None:
        import onnxruntime as ort

        model = open_model_dir(settings.model)
        self.max_length = _max_length(settings.max_length, model.max_seq_length)
        self.batch_size = settings.batch_size or (INT8_BATCH if settings.quantize else FP32_BATCH)
        self.threads = settings.threads or os.cpu_count() or 1
        self.name = f"onnx-{'int8' if settings.quantize else 'fp32'}/{model.name}"
        self.onnx_path: Path = ensure_onnx(model, settings.quantize)
        self._tokenizer_json = str(model.tokenizer_json)
        self._tok = _batch_tokenizer(self._tokenizer_json, self.max_length)
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), _session_options(ort, self.threads),
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EmbeddingError(f"ONNX Runtime could not load {self.onnx_path}: {exc}") from exc
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        self.dim = int(outputs["sentence_embedding"][1])  # [batch, hidden]

    def tokenizer_spec(self) -> TokenizerSpec:
        return TokenizerSpec(kind="hf", path=self._tokenizer_json, max_tokens=self.max_length - SPECIAL_TOKENS)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(self._tok.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Tokenise once: the encodings give both the sort key and the model input.
        encodings = self._tok.encode_batch(list(texts)) if texts else []
        return embed_sorted(self._run, encodings, self.batch_size, [len(e.ids) for e in encodings], self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]

    def embed_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, its tokens' vectors: float32 (tokens, dim), each row L2-normalised, [CLS] first and
        [SEP] last, truncated like ``embed``. Batches run in input order, ``batch_size`` texts at a time."""
        encodings = self._tok.encode_batch(list(texts)) if texts else []
        out: list[np.ndarray] = []
        for start in range(0, len(encodings), self.batch_size):
            batch = encodings[start:start + self.batch_size]
            hidden = self._forward(batch, "token_embeddings")
            out.extend(l2_normalise(hidden[row, :len(e.ids)]) for row, e in enumerate(batch))
        return out

    def close(self) -> None:
        self._session = None

    def _run(self, encodings: Sequence) -> np.ndarray:  # Sequence[tokenizers.Encoding]
        if not encodings:
            return np.zeros((0, self.dim), np.float32)
        return self._forward(encodings, "sentence_embedding")

    def _forward(self, encodings: Sequence, output: str) -> np.ndarray:
        if self._session is None:
            raise EmbeddingError(f"{self.name}: embedder is closed")
        ids, mask = _pad(encodings)
        try:
            return self._session.run([output], {"input_ids": ids, "attention_mask": mask})[0]
        except Exception as exc:  # onnxruntime's Fail/RuntimeException (e.g. out of memory)
            raise EmbeddingError(f"{self.name}: inference failed on a batch of {len(encodings)}: {exc}") from exc


def _max_length(configured: int, model_max: int) -> int:
    # The model was trained up to model_max tokens; longer inputs would need position embeddings it lacks
    # or never learned. sentence-transformers applies the same cap.
    return min(configured, model_max)


def _batch_tokenizer(path: str, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    # tokenizer.json files often carry their own truncation/padding (MiniLM's: fixed 128); replace both.
    tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


def _pad(encodings: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest encoding; pad ids are 0 and masked out of attention and pooling."""
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), np.int64)
    mask = np.zeros((len(encodings), longest), np.int64)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.ids)] = 1
    return ids, mask


def _session_options(ort, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1  # the graph is a chain; parallelism is inside each MatMul
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads spin-wait by default. Here the embedder shares the cores with loader/chunker
    # processes, and spinning threads then burn the CPU those processes need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
