"""Test suites fanrag ships for code that plugs into it: ``fanrag.testing.stores`` is the contract every
store backend passes. Importing this package needs pytest; ``import fanrag`` never imports it."""

from .stores import (
    BlobStoreContract,
    GraphStoreContract,
    KeywordStoreContract,
    MetaStoreContract,
    StoreContract,
    StoreOpener,
    VectorStoreContract,
)

__all__ = [
    "BlobStoreContract", "GraphStoreContract", "KeywordStoreContract", "MetaStoreContract", "StoreContract",
    "StoreOpener", "VectorStoreContract",
]
