"""A PostgreSQL connection pool shared by threads, errors mapped to StoreError, and schema migrations.

The store protocols are synchronous and called from ``asyncio.to_thread`` workers, so the server
backends use psycopg 3's synchronous API over a ``psycopg_pool.ConnectionPool``: each call borrows a
connection for one transaction, so concurrent writes (and the shards of one search) run on separate
connections in parallel, and psycopg releases the GIL while it waits on the server. A pooled
connection is checked when borrowed, so after a server restart broken connections are replaced instead
of failing the next call, and a transaction whose connection is lost is run again on a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreError, require

T = TypeVar("T")
SCHEMA_TABLE = "fanrag_schema"
# A transaction-scoped advisory lock: two processes opening the same database migrate one at a time.
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('fanrag_schema'))"


def _psycopg() -> Any:
    return require("psycopg", feature="PostgreSQL stores", extra="postgres")


def to_postgres_dsn(url: str) -> str:
    """``pgvector://user@host:port/db?opts`` (or ``postgres://``) -> ``postgresql://user@host:port/db?opts``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "pgvector"):
        raise StoreError(f"not a PostgreSQL URL: {redact(url)}")
    return urlunsplit(("postgresql", *parts[1:]))


def redact(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", *parts[2:]))


class PgDb:
    """A connection pool over one database: ``run(fn)`` runs a transaction function (retried once on a
    lost connection), ``query`` one statement."""

    def __init__(self, dsn: str, *, read_only: bool = False, max_size: int = 4, timeout: float = 15.0,
                 session: dict[str, str] | None = None) -> None:
        """``session``: settings (``SET name = value``) for every connection the pool opens."""
        _psycopg()
        pool_mod = require("psycopg_pool", feature="PostgreSQL stores", extra="postgres")
        self.dsn = to_postgres_dsn(dsn)
        self.where = redact(self.dsn)
        self.read_only = read_only
        # timeout: how long a call waits for a connection; while the server is down the pool keeps
        # reconnecting, so a restart shorter than this is only a pause.
        self._probe(timeout)
        self._pool = pool_mod.ConnectionPool(
            self.dsn, min_size=1, max_size=max(1, max_size), timeout=timeout, open=False,
            kwargs={"autocommit": True}, check=pool_mod.ConnectionPool.check_connection,
            configure=_session_configurer(dict(session or {})), name="fanrag")
        try:
            self._pool.open(wait=True, timeout=timeout)
        except Exception as exc:  # PoolTimeout: the server is unreachable or refused the login
            self._pool.close()
            raise StoreError(f"{self.where}: cannot connect to PostgreSQL: {exc}") from exc

    def _probe(self, timeout: float) -> None:
        """One direct connection first: an unreachable server or a refused login fails now, with the
        server's own message, instead of after the pool's timeout."""
        psycopg = _psycopg()
        try:
            psycopg.connect(self.dsn, connect_timeout=max(1, int(timeout))).close()
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect to PostgreSQL: {exc}") from exc

    def run(self, fn: Callable[[Any], T], *, write: bool = False, atomic: bool = True) -> T:
        """``fn(conn)``, in one transaction if ``atomic``. When the connection is lost on the way (a
        server restart, a dropped connection) it runs once more on a fresh one: that is safe because
        every store write is idempotent, and a read has no effect."""
        if write and self.read_only:
            raise StoreError(f"{self.where}: opened read-only")
        psycopg = _psycopg()
        for attempt in range(2):
            try:
                with self._pool.connection() as conn:
                    try:
                        if not atomic:
                            return fn(conn)
                        with conn.transaction():
                            return fn(conn)
                    except psycopg.OperationalError:
                        if attempt or not conn.broken:
                            raise
            except psycopg.Error as exc:
                raise StoreError(f"{self.where}: {'write' if write else 'query'} failed: {exc}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """One statement's rows (retried once on a lost connection)."""
        return self.run(lambda conn: conn.execute(sql, params).fetchall(), atomic=False)

    def close(self) -> None:
        self._pool.close()


def _session_configurer(session: dict[str, str]) -> Callable[[Any], None] | None:
    if not session:
        return None
    names = list(session)
    sql = "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in names)
    params = [x for name in names for x in (name, session[name])]
    return lambda conn: conn.execute(sql, params).fetchall()


def migrate(db: PgDb, component: str, migrations: Sequence[str]) -> int:
    """Apply ``component``'s migrations not yet applied (``migrations[i]`` moves version i to i + 1).

    Versions are kept per component in one ``fanrag_schema`` table, so the metadata and vector stores
    can share a database. A database newer than this code is refused rather than guessed at.
    """

    def apply(conn: Any) -> None:
        conn.execute(_MIGRATION_LOCK)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
                     "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        row = conn.execute(f"SELECT version FROM {SCHEMA_TABLE} WHERE component = %s", (component,)).fetchone()
        version = row[0] if row else 0
        if version > len(migrations):
            raise StoreError(f"{db.where}: {component} schema version {version} is newer than this fanrag "
                             f"(knows {len(migrations)}); upgrade fanrag")
        for script in migrations[version:]:
            conn.execute(script)  # several statements, no parameters: sent as one simple query
        conn.execute(f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES (%s, %s) ON CONFLICT (component) "
                     "DO UPDATE SET version = excluded.version", (component, len(migrations)))

    db.run(apply, write=True)
    return len(migrations)


def schema_version(db: PgDb, component: str) -> int:
    """The applied version of ``component``'s schema (0: never migrated)."""
    if not db.query(f"SELECT to_regclass('{SCHEMA_TABLE}') IS NOT NULL")[0][0]:
        return 0
    rows = db.query(f"SELECT version FROM {SCHEMA_TABLE} WHERE component = %s", (component,))
    return rows[0][0] if rows else 0
