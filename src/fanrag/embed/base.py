"""The Embedder protocol and the tokenizer the chunker counts with.

An embedder turns texts into L2-normalised float32 vectors. ``embed_batch`` is exactly one forward pass
(or one HTTP request); ``embed`` takes any number of texts, sorts them by token length and cuts them into
``batch_size`` pieces so padding is not wasted, then restores the input order (see ``batching.py``).

The chunker runs in worker processes, so it does not get the embedder itself (a loaded ONNX session is
not something to pickle); it gets a ``TokenizerSpec`` that each process turns into a cached tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class TokenizerSpec:
    """How to build the embedder's tokenizer in another process.

    kind = "hf": ``path`` is a Hugging Face ``tokenizer.json``; kind = "approx": a word/punctuation
    regex that over-counts slightly (used for HTTP embedders whose tokenizer is unknown).
    ``max_tokens`` is the model's max input length minus its special tokens.
    """

    kind: str
    max_tokens: int
    path: str = ""


@runtime_checkable
class Tokenizer(Protocol):
    max_tokens: int

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of ``text`` (no special tokens)."""

    def count(self, text: str) -> int: ...

    def count_batch(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class Embedder(Protocol):
    name: str  # identifies model + precision, e.g. "onnx-int8/all-MiniLM-L6-v2"; part of cache keys
    dim: int
    batch_size: int

    def tokenizer_spec(self) -> TokenizerSpec: ...

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One forward pass; returns float32 (len(texts), dim), L2-normalised."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Any number of texts, length-sorted into batches; rows in input order."""

    def embed_query(self, text: str) -> np.ndarray:
        """One query -> (dim,) vector."""

    def close(self) -> None: ...


class _HFTokenizer:
    def __init__(self, path: str, max_tokens: int) -> None:
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(path)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_tokens = max_tokens

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._tok.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]


class _ApproxTokenizer:
    """Words and single punctuation marks, each one token; long words count as several."""

    def __init__(self, max_tokens: int) -> None:
        import re

        self._re = re.compile(r"\w{1,6}|[^\w\s]")
        self.max_tokens = max_tokens

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._re.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in self._re.finditer(text))

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


@lru_cache(maxsize=8)
def load_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Build (once per process) the tokenizer a spec describes."""
    if spec.kind == "hf":
        return _HFTokenizer(spec.path, spec.max_tokens)
    if spec.kind == "approx":
        return _ApproxTokenizer(spec.max_tokens)
    raise ValueError(f"unknown tokenizer kind {spec.kind!r}")
