"""Embedders: text -> L2-normalised float32 vectors. ``create_embedder(settings)`` picks the backend.

Backends are imported only when chosen, so a missing optional package (sentence-transformers) fails with
MissingExtraError at creation, not at ``import fanrag``.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from ..settings import EmbedSettings
from .base import Embedder, Tokenizer, TokenizerSpec, load_tokenizer
from .batching import aembed, embed_sorted

# backend name -> (module, class). Each class takes (settings: EmbedSettings).
BACKENDS: dict[str, tuple[str, str]] = {
    "onnx": ("fanrag.embed.onnx", "OnnxEmbedder"),
    "sentence-transformers": ("fanrag.embed.st", "SentenceTransformerEmbedder"),
    "http": ("fanrag.embed.http", "HttpEmbedder"),
}


def create_embedder(settings: EmbedSettings) -> Embedder:
    """Build the embedder ``settings.backend`` names (loading or converting its model)."""
    try:
        module_name, class_name = BACKENDS[settings.backend]
    except KeyError:
        raise ConfigError("embed.backend", f"unknown backend {settings.backend!r}; known: {sorted(BACKENDS)}") \
            from None
    return getattr(importlib.import_module(module_name), class_name)(settings)


__all__ = ["BACKENDS", "Embedder", "Tokenizer", "TokenizerSpec", "aembed", "create_embedder", "embed_sorted",
           "load_tokenizer"]
