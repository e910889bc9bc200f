"""An index for the MCP tests, and the MCP SDK's own client against ``fanrag mcp`` processes.

The ingest root is the HTTP server tests' (``tests.server.conftest.ingest_root``): two documents at its
top, and ``sub/`` with a document and a symlink to ``outside/secret.txt``. The index starts with the
two top documents only, so that an ingest test has something new to add (``sub``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.server.conftest import DOCS, free_port, ingest_root, running_process

mcp = pytest.importorskip("mcp", reason="the mcp extra is not installed")

WRITE_TOKEN = "mcp-write-token"
READ_TOKEN = "mcp-read-token"
CALL_TIMEOUT_S = 120  # one tool call, an ingest included, on a busy machine
ENV = {"FANRAG_PIPELINE__WORKERS": "1", "FANRAG_TOKEN": "", "FANRAG_READ_TOKEN": ""}


def mcp_command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fanrag.cli", "mcp", "--home", str(home), *args]


@pytest.fixture(scope="module")
def index(tmp_path_factory: Any) -> SimpleNamespace:
    """A fresh home over the two top documents of a fresh ingest root (one per test module)."""
    from fanrag.engine import Engine
    from fanrag.settings import Settings

    root, outside = ingest_root(tmp_path_factory)
    home = tmp_path_factory.mktemp("mcp-home")
    settings = Settings.load(home=home, overrides={"pipeline": {"workers": 1}}, env={})
    with Engine.open(settings=settings) as engine:
        summary = engine.ingest([root / name for name in DOCS])
    assert summary.ok == len(DOCS), summary.to_dict()
    return SimpleNamespace(home=home, root=root, outside=outside)


@asynccontextmanager
async def stdio_client(home: Path, *args: str) -> Any:
    """The SDK's client over a ``fanrag mcp`` subprocess that it starts itself (stdio)."""
    params = mcp.StdioServerParameters(command=sys.executable, args=mcp_command(home, *args)[1:],
                                       env={**os.environ, **ENV})
    async with mcp.Client(params, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        yield client


@asynccontextmanager
async def http_client(url: str, token: str | None = None) -> Any:
    """The SDK's client over streamable HTTP, sending ``token`` as a bearer token."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(CALL_TIMEOUT_S)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with mcp.Client(transport, read_timeout_seconds=CALL_TIMEOUT_S) as client:
            yield client


@contextmanager
def running_mcp(home: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``fanrag mcp --http`` over ``home`` on a free port; yields its MCP URL once the port answers (any
    answer, a 404 at / included, means it listens)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_process(mcp_command(home, "--http", "--port", str(port), *args), {**ENV, **(env or {})},
                         home.parent / f"mcp-{port}.log", base + "/"):
        yield base + "/mcp"


def text_of(result: Any) -> str:
    """The text of a tool result (an error's one line)."""
    return "".join(getattr(c, "text", "") for c in result.content)
