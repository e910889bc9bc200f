"""Embedders: text -> L2-normalised float32 vectors. ``create_embedder(settings)`` picks the backend
from the ``EMBEDDERS`` registry (``factory.py``); backends are imported only when chosen."""

from __future__ import annotations

from .base import Embedder, Tokenizer, TokenizerSpec, load_tokenizer
from .batching import aembed, embed_sorted
from .factory import EMBEDDERS, create_embedder

__all__ = ["EMBEDDERS", "Embedder", "Tokenizer", "TokenizerSpec", "aembed", "create_embedder", "embed_sorted",
           "load_tokenizer"]
