"""A real ``fanrag serve`` process on a free loopback port, over a fresh index home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

TOKEN = "s3cret-token"
DOCS = {
    "aspirin.txt": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes. Common side effects of "
                   "aspirin include stomach bleeding and ulcers.\n",
    "volcano.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Volcanic ash from Mount "
                  "Etna can disrupt air travel across Europe.\n",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("ingest-root")
    for name, text in DOCS.items():
        (root / name).write_text(text)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("not for the index\n")
    home = tmp_path_factory.mktemp("home")
    port = _free_port()
    env = {**os.environ, "FANRAG_SERVER__MAX_UPLOAD_MB": "1", "FANRAG_TOKEN": TOKEN}
    log = (home.parent / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "fanrag.cli", "serve", "--home", str(home), "--port", str(port),
                             "--ingest-root", str(root)], env=env, stdout=log, stderr=subprocess.STDOUT)
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
        yield SimpleNamespace(url=url, root=root, outside=outside, home=home,
                              auth={"Authorization": f"Bearer {TOKEN}"})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
