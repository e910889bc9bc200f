"""Stores by kind (meta, vectors, keywords, blobs, graph) and backend (``<kind>_<backend>.py``).

``base`` holds one Protocol per kind; ``factory`` picks the backend a URL names (``register_backend``
adds one); ``storeset`` opens the five stores of a home (``open_stores``); ``lock`` is the writer lock.
"""

from .base import (
    BlobStore,
    DocumentRecord,
    GraphStore,
    KeywordStore,
    MetaStore,
    ScoredId,
    SourceRecord,
    VectorStore,
)
from .factory import KINDS, OpenContext, open_backend, register_backend
from .lock import WriterLock
from .storeset import StoreSet, open_reader, open_stores

__all__ = [
    "KINDS", "BlobStore", "DocumentRecord", "GraphStore", "KeywordStore", "MetaStore", "OpenContext", "ScoredId",
    "SourceRecord", "StoreSet", "VectorStore", "WriterLock", "open_backend", "open_reader", "open_stores",
    "register_backend",
]
