"""The shipped MetaStore contract on every backend (SQLite, PostgreSQL), and SQLite's schema versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fanrag.errors import StoreError
from fanrag.testing.stores import MetaStoreContract


class TestMetaStoreContract(MetaStoreContract):
    """Run against SQLite and PostgreSQL (see conftest.py)."""


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from fanrag.stores.meta_sqlite import SqliteMetaStore

    SqliteMetaStore(tmp_path / "m.sqlite").close()
    with sqlite3.connect(tmp_path / "m.sqlite") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        SqliteMetaStore(tmp_path / "m.sqlite")
