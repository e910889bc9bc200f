"""The shipped GraphStore contract on every backend (SQLite, FalkorDB)."""

from __future__ import annotations

from fanrag.testing.stores import GraphStoreContract


class TestGraphStoreContract(GraphStoreContract):
    """Run against the SQLite graph and FalkorDB (see conftest.py)."""
