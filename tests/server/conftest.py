"""A real ``fanrag serve`` process on a free loopback port, over a fresh index home.

The ingest root holds the documents, a subdirectory ``sub/`` with a symlink to a file outside the root
(``outside/secret.txt``), and ``outside/`` is where nothing may be read from.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

TOKEN = "s3cret-token"
SECRET = "The launch code of the outside file is 7-alpha-7; it must never be indexed.\n"
DOCS = {
    "aspirin.txt": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes. Common side effects of "
                   "aspirin include stomach bleeding and ulcers.\n",
    "volcano.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Volcanic ash from Mount "
                  "Etna can disrupt air travel across Europe.\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(home: Path, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "fanrag.cli", "serve", "--home", str(home), "--port", str(port), *args]


@contextmanager
def running_server(home: Path, root: Path, env: dict[str, str]) -> Iterator[str]:
    """``fanrag serve`` over ``home`` with ``--ingest-root root``; yields its URL once /healthz answers."""
    port = free_port()
    log = (home.parent / f"server-{port}.log").open("w")
    proc = subprocess.Popen(serve_command(home, port, "--ingest-root", str(root)), env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("server exited: " + Path(log.name).read_text()[-2000:])
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + Path(log.name).read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def ingest_root(tmp_path_factory: Any) -> tuple[Path, Path]:
    """An ingest root with the documents and ``sub/`` (a document and a symlink out), and the outside."""
    root = tmp_path_factory.mktemp("ingest-root")
    for name, text in DOCS.items():
        (root / name).write_text(text)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text(SECRET)
    (root / "sub").mkdir()
    (root / "sub" / "tides.txt").write_text("The moon's gravity raises two tides a day on most coasts.\n")
    (root / "sub" / "secret.txt").symlink_to(outside / "secret.txt")
    return root, outside


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[SimpleNamespace]:
    root, outside = ingest_root(tmp_path_factory)
    home = tmp_path_factory.mktemp("home")
    env = {"FANRAG_SERVER__MAX_UPLOAD_MB": "1", "FANRAG_TOKEN": TOKEN}
    with running_server(home, root, env) as url:
        yield SimpleNamespace(url=url, root=root, outside=outside, home=home,
                              auth={"Authorization": f"Bearer {TOKEN}"})
