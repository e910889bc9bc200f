"""fanrag: retrieval-augmented generation, parallel by design.

Public API (imported lazily so worker processes that only chunk do not load the stores):
``Engine``, ``Settings``, the types ``Document``, ``Page``, ``Chunk``, ``Hit``, and the errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    CorruptDocument,
    EmbeddingError,
    EmptyDocument,
    EncryptedDocument,
    FanragError,
    IndexLocked,
    JobError,
    LoadError,
    MissingExtraError,
    QueryError,
    StoreError,
    UnsupportedFormat,
)
from .settings import Settings
from .types import Chunk, Document, Hit, Page

if TYPE_CHECKING:
    from .engine import Engine
    from .ingest.summary import IngestSummary

__version__ = "0.1.0"

__all__ = [
    "Chunk", "ConfigError", "CorruptDocument", "Document", "EmbeddingError", "EmptyDocument",
    "EncryptedDocument", "Engine", "FanragError", "Hit", "IndexLocked", "IngestSummary", "JobError",
    "LoadError", "MissingExtraError", "Page", "QueryError", "Settings", "StoreError", "UnsupportedFormat",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name == "IngestSummary":
        from .ingest.summary import IngestSummary

        return IngestSummary
    raise AttributeError(f"module 'fanrag' has no attribute {name!r}")
