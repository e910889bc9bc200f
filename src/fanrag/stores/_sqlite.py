"""A SQLite connection shared by threads: WAL, one lock, one writer, errors mapped to StoreError.

The pipeline writes from ``asyncio.to_thread`` workers, so a connection is opened with
``check_same_thread=False`` and every use goes through ``lock``. WAL lets reader processes
(``fanrag query`` while an ingest runs) see each committed transaction without blocking the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError

# SQLite's default limit on host parameters is 32766 (>= 3.32); stay well below it.
MAX_PARAMS = 900


class SqliteDb:
    """One connection + one lock. ``tx()`` is a write transaction; ``read()`` a consistent read."""

    def __init__(self, path: Path, *, read_only: bool = False, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lock = threading.RLock()
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.exists():
                raise StoreError(f"{self.path}: no such database (nothing has been ingested yet?)")
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly one call.
            self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at each commit, so "returned" means "survives a power cut" too.
            # NORMAL survives a killed process, not a power cut (see SqliteMetaStore for when that is enough).
            self.conn.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
            # Checkpoint the WAL every ~64 MiB rather than 4 MiB: each checkpoint fsyncs the database, and
            # with 512-chunk batches the default checkpointed every few batches (half the insert time).
            self.conn.execute("PRAGMA wal_autocheckpoint=16384")
            self.conn.execute("PRAGMA foreign_keys=ON")
            # 32 MiB page cache: chunk ids are hashes, so index inserts land on random pages.
            self.conn.execute("PRAGMA cache_size=-32768")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: take the write lock up front, no upgrade deadlocks)."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: write failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Several SELECTs that see one snapshot."""
        with self.lock:
            try:
                self.conn.execute("BEGIN")
                try:
                    yield self.conn
                finally:
                    self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: read failed: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: query failed: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def batched(items: Sequence[Any], n: int = MAX_PARAMS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def marks(n: int) -> str:
    """``?,?,?`` for an IN clause of n parameters."""
    return ",".join("?" * n)


def migrate(db: SqliteDb, migrations: Sequence[str]) -> int:
    """Apply the migrations not yet applied; ``migrations[i]`` moves the schema from version i to i+1.

    Returns the schema version. A database newer than this code is refused rather than guessed at.
    """
    with db.tx() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > len(migrations):
            raise StoreError(f"{db.path}: schema version {version} is newer than this fanrag "
                             f"(knows {len(migrations)}); upgrade fanrag")
        for script in migrations[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (len(migrations),))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (len(migrations),))
    return len(migrations)


def schema_version(db: SqliteDb) -> int:
    rows = db.query("SELECT version FROM schema_version")
    return rows[0][0] if rows else 0
