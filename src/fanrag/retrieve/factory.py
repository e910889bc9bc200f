"""The retrieval subsystem's registries: query transformers, rerankers and answer generators.

Each entry is built by its class's ``from_settings``; optional backends are imported only when a
setting names them, and a missing package names the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from ..embed.base import Embedder
    from ..settings import LLMSettings, RerankSettings, Settings
    from .generate import Generator
    from .rerank import CachedReranker
    from .transform import QueryTransformer

TRANSFORMERS: Registry[type] = Registry("retrieval.transform", "query transformer")
TRANSFORMERS.add("rules", "fanrag.retrieve.transform:RulesTransformer")
TRANSFORMERS.add("llm", "fanrag.retrieve.transform:LLMTransformer")
TRANSFORMERS.add("none", "fanrag.retrieve.transform:NoTransformer")

RERANKERS: Registry[type] = Registry("rerank.backend", "reranker")
RERANKERS.add("cross-encoder", "fanrag.retrieve.rerank:CrossEncoderReranker", extra="st")
RERANKERS.add("cohere", "fanrag.retrieve.rerank:CohereReranker")
RERANKERS.add("tei", "fanrag.retrieve.rerank:TEIReranker")

GENERATORS: Registry[type] = Registry("llm.backend", "answer generator")
GENERATORS.add("extractive", "fanrag.retrieve.generate:ExtractiveGenerator")
GENERATORS.add("openai", "fanrag.retrieve.generate:OpenAIGenerator")
GENERATORS.add("llama-cpp", "fanrag.retrieve.generate:LlamaCppGenerator", extra="llm")


def create_transformer(settings: Settings) -> QueryTransformer:
    """The transformer ``settings.retrieval.transform`` names."""
    return TRANSFORMERS.load(str(settings.retrieval.transform)).from_settings(settings)  # type: ignore[attr-defined]


def create_reranker(cfg: RerankSettings) -> CachedReranker | None:
    """The reranker ``cfg.backend`` names, behind its LRU; None for backend ``none``."""
    if cfg.backend == "none":
        return None
    from .rerank import CachedReranker

    inner = RERANKERS.load(str(cfg.backend)).from_settings(cfg)  # type: ignore[attr-defined]
    return CachedReranker(inner, cfg.cache_size)


def create_generator(cfg: LLMSettings, embedder: Embedder | None = None) -> Generator:
    """The generator ``cfg.backend`` names. ``embedder`` (the engine's) lets the extractive answer pick
    passages by meaning and a model's answer be checked against its sources."""
    return GENERATORS.load(str(cfg.backend)).from_settings(cfg, embedder)  # type: ignore[attr-defined]
