"""``fanrag mcp`` over stdio, started as a subprocess by the MCP SDK's own client: every tool, the
ingest root (a path outside, a symlink out), malformed calls, and read-only opening without ingest."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag.engine import Engine

from .conftest import stdio_client, text_of

pytestmark = pytest.mark.timeout(240)

TOOLS = {"search", "answer", "status", "ingest"}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 200))


def test_every_tool_over_stdio(index: SimpleNamespace) -> None:
    async def session() -> None:
        async with stdio_client(index.home, "--allow-ingest", "--ingest-root", str(index.root)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert set(listed) == TOOLS
            assert all(t.output_schema and t.output_schema["type"] == "object" for t in listed.values())
            assert listed["search"].annotations.read_only_hint and not listed["ingest"].annotations.read_only_hint
            assert "filter" in listed["search"].input_schema["properties"]

            found = await client.call_tool("search", {"query": "What does aspirin block?", "top_n": 2})
            assert not found.is_error, text_of(found)
            chunks = found.structured_content["chunks"]
            assert [c["n"] for c in chunks] == [1, 2] and chunks[0]["source"] == str(index.root / "aspirin.txt")
            assert json.loads(text_of(found)) == found.structured_content  # the same JSON as text

            answered = await client.call_tool("answer", {"query": "What does volcanic ash disrupt?",
                                                         "branches": ["bm25", "dense"]})
            assert not answered.is_error, text_of(answered)
            body = answered.structured_content
            assert "air travel" in body["answer"] and body["citations"][0]["source"].endswith("volcano.md")

            status = (await client.call_tool("status", {})).structured_content
            assert status["documents"] == {"committed": 2, "pending": 0, "failed": 0} and status["ingest"]

            refused = await client.call_tool("ingest", {"paths": [str(index.outside)]})
            assert refused.is_error and "outside server.ingest_root" in text_of(refused)
            symlink = await client.call_tool("ingest", {"paths": ["sub/secret.txt"]})
            assert symlink.is_error and "outside server.ingest_root" in text_of(symlink)
            done = await client.call_tool("ingest", {"paths": ["sub"]})
            assert not done.is_error, text_of(done)
            summary = done.structured_content
            assert summary["ok"] == 1 and len(summary["failed"]) == 1
            assert summary["failed"][0]["source"].endswith("sub/secret.txt")
            tides = (await client.call_tool("search", {"query": "moon gravity tides", "top_n": 1})).structured_content
            assert tides["chunks"][0]["source"].endswith("sub/tides.txt")

            for name, args, reason in [
                ("search", {"query": "x", "top_n": "many"}, "invalid arguments: top_n: Input should be a valid integer"),
                ("search", {}, "invalid arguments: query: Field required"),
                ("answer", {"query": "x", "branches": ["sparse"]}, "invalid arguments: branches.0: Input should be"),
                ("search", {"query": "x", "top_n": 50}, "top_n must be in 1..20 (retrieval.candidates); got 50"),
                # refused whether the engine takes filters yet or not: never silently ignored
                ("search", {"query": "x", "filter": {"no such": 1}}, ("filters are not supported",
                                                                       "bad filter field 'no such'")),
                ("ingest", {"paths": "sub"}, "invalid arguments: paths: Input should be a valid list"),
                ("nope", {}, "Unknown tool: nope"),
            ]:
                bad = await client.call_tool(name, args)
                line = text_of(bad)
                assert bad.is_error and line.startswith(reason), (name, args, line)
                assert "\n" not in line and "Traceback" not in line

    run(session())


def test_without_ingest_the_index_opens_read_only(index: SimpleNamespace) -> None:
    async def session() -> None:
        async with stdio_client(index.home) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS - {"ingest"}
            status = (await client.call_tool("status", {})).structured_content
            assert not status["ingest"]
            # no writer lock is held: another process may write to the index meanwhile
            await asyncio.to_thread(lambda: Engine.open(index.home).close())
            called = await client.call_tool("ingest", {"paths": ["sub"]})
            assert called.is_error and text_of(called) == "Unknown tool: ingest"

    run(session())
