"""``create_embedder(settings)``: the embedder ``embed.backend`` names, its module imported only when chosen.

onnx (the default) and http need only core dependencies; sentence-transformers needs the ``st`` extra
(torch), and without it creation fails with MissingExtraError naming that extra, not ``import fanrag``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from ..settings import EmbedSettings
    from .base import Embedder

# Each class is built by ``cls(settings: EmbedSettings)``.
EMBEDDERS: Registry[type] = Registry("embed.backend", "embedder")
EMBEDDERS.add("onnx", "fanrag.embed.onnx:OnnxEmbedder")
EMBEDDERS.add("sentence-transformers", "fanrag.embed.st:SentenceTransformerEmbedder", extra="st")
EMBEDDERS.add("http", "fanrag.embed.http:HttpEmbedder")


def create_embedder(settings: EmbedSettings) -> Embedder:
    """Build the embedder ``settings.backend`` names (loading or converting its model)."""
    return EMBEDDERS.create(settings.backend, settings)
