"""``fanrag mcp --http`` (streamable HTTP) as real processes, through the MCP SDK's own client: the tools,
sources named as the read API names them, the write token for ingest, the read token for everything,
and malformed requests.

Two servers over one home: ``writer`` has the write token (so it is the index's writer) and open reads;
``guarded`` has only a read token, so it opens the index read-only beside the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from .conftest import READ_TOKEN, WRITE_TOKEN, http_client, running_mcp, text_of

pytestmark = pytest.mark.timeout(240)

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(scope="module")
def servers(index: SimpleNamespace) -> Iterator[SimpleNamespace]:
    with (running_mcp(index.home, "--ingest-root", str(index.root), env={"FANRAG_TOKEN": WRITE_TOKEN}) as writer,
          running_mcp(index.home, "--ingest-root", str(index.root), "--read-token", READ_TOKEN) as guarded):
        yield SimpleNamespace(writer=writer, guarded=guarded)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 200))


def test_tools_over_http_name_sources_like_the_read_api(servers: SimpleNamespace, index: SimpleNamespace) -> None:
    async def session() -> None:
        async with http_client(servers.writer) as client:  # reads are open on this server
            assert {t.name for t in (await client.list_tools()).tools} == {"search", "answer", "status", "ingest"}
            found = (await client.call_tool("search", {"query": "volcanic ash", "top_n": 1})).structured_content
            assert found["chunks"][0]["source"] == "volcano.md" and found["chunks"][0]["citation"] == "[1] volcano.md"
            answered = await client.call_tool("answer", {"query": "What does aspirin block?"})
            assert not answered.is_error and answered.structured_content["citations"][0]["source"] == "aspirin.txt"
            status = (await client.call_tool("status", {})).structured_content
            assert status["home"] == index.home.name and status["ingest"]  # no absolute server path

    run(session())


def test_ingest_needs_the_write_token(servers: SimpleNamespace) -> None:
    async def session() -> None:
        for token in (None, "wrong-token"):
            async with http_client(servers.writer, token) as client:
                refused = await client.call_tool("ingest", {"paths": ["sub"]})
                assert refused.is_error and text_of(refused).startswith("missing or wrong bearer token")
        async with http_client(servers.writer, WRITE_TOKEN) as client:
            outside = await client.call_tool("ingest", {"paths": ["../"]})
            assert outside.is_error and text_of(outside) == "'../' is outside server.ingest_root"
            done = await client.call_tool("ingest", {"paths": ["sub"]})
            assert not done.is_error, text_of(done)
            summary = done.structured_content
            assert summary["ok"] == 1 and summary["failed"][0]["source"] == "sub/secret.txt"

    run(session())


def test_the_read_token_guards_every_request(servers: SimpleNamespace) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {READ_TOKEN}"}):
        r = httpx.post(servers.guarded, json=INIT, headers=MCP_HEADERS | headers, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text

    async def session() -> None:
        async with http_client(servers.guarded, READ_TOKEN) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"search", "answer", "status"}
            found = await client.call_tool("search", {"query": "aspirin", "top_n": 1})
            assert not found.is_error and found.structured_content["chunks"][0]["source"] == "aspirin.txt"

    run(session())


def test_a_malformed_request_is_refused_and_the_server_goes_on(servers: SimpleNamespace) -> None:
    r = httpx.post(servers.writer, content=b'{"jsonrpc": "2.0", "id": 1, "method":', headers=MCP_HEADERS, timeout=30)
    assert 400 <= r.status_code < 500 and "Traceback" not in r.text
    r = httpx.post(servers.writer, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call"}, headers=MCP_HEADERS,
                   timeout=30)
    assert 400 <= r.status_code < 500 and "Traceback" not in r.text
    # bound to loopback, the server refuses another Host (DNS rebinding), as the SDK does by default
    r = httpx.post(servers.writer, json=INIT, headers=MCP_HEADERS | {"Host": "evil.example"}, timeout=30)
    assert r.status_code == 421

    async def session() -> None:
        async with http_client(servers.writer) as client:
            bad = await client.call_tool("search", {"query": "x" * 4001})
            assert bad.is_error and text_of(bad) == "invalid arguments: query: String should have at most 4000 characters"
            assert not (await client.call_tool("status", {})).is_error

    run(session())
