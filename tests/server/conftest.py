"""A real ``fanrag serve`` process on a free loopback port, over a fresh index home.

The ingest root holds the documents, a subdirectory ``sub/`` with a symlink to a file outside the root
(``outside/secret.txt``), and ``outside/`` is where nothing may be read from.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.jsonhttp import JsonHandler

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
def running_process(cmd: list[str], env: dict[str, str], log_path: Path, probe: str,
                    ready: Callable[[httpx.Response], bool] = lambda r: True) -> Iterator[None]:
    """``cmd`` as a subprocess (output to ``log_path``) until the block ends; the block starts once a GET of
    ``probe`` answers and ``ready`` accepts the answer (90 s at most)."""
    shown = " ".join(cmd[2:4])  # e.g. fanrag.cli serve
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{shown} exited: " + log_path.read_text()[-2000:])
            try:
                if ready(httpx.get(probe, timeout=1)):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shown} did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@contextmanager
def running_server(home: Path, root: Path, env: dict[str, str]) -> Iterator[str]:
    """``fanrag serve`` over ``home`` with ``--ingest-root root``; yields its URL once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_process(serve_command(home, port, "--ingest-root", str(root)), env,
                         home.parent / f"server-{port}.log", url + "/healthz", lambda r: r.status_code == 200):
        yield url


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


# ---------------------------------------------------------------------------------------------- streaming, UI

READ_TOKEN = "r3ad-token"
PDF = Path(__file__).parents[1] / "fixtures" / "three-pages.pdf"  # "Chapter n." on page n


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """The (event, data) pairs of a server-sent event stream; ``event`` is "message" for a data-only frame."""
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            yield event, (data if data == "[DONE]" else json.loads(data))
            event, data = "message", ""


@pytest.fixture(scope="session")
def served(tmp_path_factory: Any) -> Iterator[SimpleNamespace]:
    """One ``fanrag serve`` with a write token and a read token, over an index of DOCS, ``sub/`` and a
    three-page PDF (``pipeline.pdf``): shared by the streaming, OpenAI and UI tests."""
    root, _ = ingest_root(tmp_path_factory)
    (root / "pipeline.pdf").write_bytes(PDF.read_bytes())
    home = tmp_path_factory.mktemp("served-home")
    env = {"FANRAG_TOKEN": TOKEN, "FANRAG_READ_TOKEN": READ_TOKEN}
    with running_server(home, root, env) as url:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.post(url + "/ingest", json={"paths": [""]}, headers=auth, timeout=300)
        assert r.status_code == 200 and r.json()["ok"] == 4, r.text
        yield SimpleNamespace(url=url, root=root, home=home, auth=auth,
                              read={"Authorization": f"Bearer {READ_TOKEN}"})


class FakeLLM:
    """A loopback OpenAI-compatible chat endpoint that streams ``reply`` word by word. Each streamed
    reply waits for ``gate`` first (set by default): a test clears it to hold generation back."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.gate = threading.Event()
        self.gate.set()
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                fake.requests.append(body)
                if not body.get("stream"):
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": fake.reply},
                                                  "finish_reason": "stop"}]})
                    return
                fake.gate.wait(30)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for word in re.findall(r"\S+\s*", fake.reply):
                    chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


LLM_REPLY = "Volcanic ash from Mount Etna can disrupt air travel across Europe [1]."


@pytest.fixture(scope="session")
def llm_served(served: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """A second ``fanrag serve`` over ``served``'s home (read-only: no write token, so no lock), answering
    with a fake streaming model (``FakeLLM``)."""
    llm = FakeLLM(LLM_REPLY)
    env = {"FANRAG_LLM__BACKEND": "openai", "FANRAG_LLM__URL": llm.url, "FANRAG_LLM__MODEL": "fake",
           "FANRAG_READ_TOKEN": READ_TOKEN, "FANRAG_TOKEN": ""}
    try:
        with running_server(served.home, served.root, env) as url:
            yield SimpleNamespace(url=url, llm=llm, read=served.read)
    finally:
        llm.close()
