"""The MCP tools' logic without MCP (``fanrag.mcp.tools``): who may ingest what, how sources are named,
what a filter does; over a real engine and index."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.errors import ConfigError, QueryError
from fanrag.mcp.tools import Access, AccessDenied, McpTools, access_for, supports_filter
from fanrag.settings import Settings
from tests.server.conftest import free_port

from .conftest import WRITE_TOKEN

pytestmark = pytest.mark.timeout(180)


def settings_for(home: Path, **server: Any) -> Settings:
    return Settings.load(home=home, overrides={"server": server, "pipeline": {"workers": 1}}, env={})


@pytest.fixture(scope="module")
def engine(index: SimpleNamespace) -> Iterator[Engine]:
    with Engine.open(settings=settings_for(index.home, ingest_root=str(index.root))) as opened:
        yield opened


def local(engine: Engine) -> McpTools:
    return McpTools(engine, Access(ingest=True))


def remote(engine: Engine) -> McpTools:
    return McpTools(engine, Access(ingest=True, write_token=WRITE_TOKEN, remote=True))


def test_access_follows_the_transport(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert access_for(settings_for(tmp_path), http=False, allow_ingest=False) == Access()
    # stdio trusts the local user: a token in the settings asks nothing of the caller
    assert access_for(settings_for(tmp_path, ingest_root=root, token="t"), http=False, allow_ingest=True) == \
        Access(ingest=True)
    assert access_for(settings_for(tmp_path, ingest_root=root, token="t"), http=True, allow_ingest=False) == \
        Access(ingest=True, write_token="t", remote=True)
    assert access_for(settings_for(tmp_path, ingest_root=root), http=True, allow_ingest=False) == Access(remote=True)
    with pytest.raises(ConfigError, match="server.ingest_root"):
        access_for(settings_for(tmp_path), http=False, allow_ingest=True)
    with pytest.raises(ConfigError, match="server.ingest_root"):
        access_for(settings_for(tmp_path, token="t"), http=True, allow_ingest=False)
    with pytest.raises(ConfigError, match="server.token"):
        access_for(settings_for(tmp_path, ingest_root=root), http=True, allow_ingest=True)
    with pytest.raises(ValueError, match="write token"):
        Access(ingest=True, remote=True)


def test_search_numbers_chunks_and_names_sources_per_transport(engine: Engine, index: SimpleNamespace) -> None:
    found = asyncio.run(local(engine).search("volcanic ash Mount Etna", top_n=2))
    assert [c.n for c in found.chunks] == [1, 2]
    top = found.chunks[0]
    assert top.source == str(index.root / "volcano.md") and "Mount Etna" in top.text
    assert top.citation == f"[1] {top.source}" and top.page == 0
    assert found.chunks[0].score >= found.chunks[1].score
    named = asyncio.run(remote(engine).search("volcanic ash Mount Etna", top_n=2))
    assert named.chunks[0].source == "volcano.md" and named.chunks[0].citation == "[1] volcano.md"
    assert named.chunks[0].chunk_id == top.chunk_id


def test_answer_maps_each_citation_to_a_source(engine: Engine) -> None:
    got = asyncio.run(remote(engine).answer("What does aspirin block?", top_n=2))
    assert got.generator == "extractive" and "cyclooxygenase" in got.answer
    by_chunk = {s.chunk_id: s for s in got.sources}
    assert got.citations and all(c.chunk_id in by_chunk for c in got.citations)
    first = got.citations[0]
    assert f"[{first.n}]" in got.answer and first.source == "aspirin.txt"


def test_answer_sources_are_numbered_as_the_fallback_cites_them(tmp_path: Path) -> None:
    """A model that fails is replaced by the extractive answer, which numbers its sources in relevance
    order, not in the model's lost-in-the-middle order: ``sources[n - 1]`` must be the chunk [n] cites."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {"a.txt": "Aspirin blocks cyclooxygenase enzymes.", "b.txt": "Aspirin thins the blood.",
                       "c.txt": "Aspirin can cause stomach ulcers."}.items():
        (docs / name).write_text(text + "\n")
    dead_llm = {"backend": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}  # nothing listens there
    settings = Settings.load(home=tmp_path / "home", overrides={"pipeline": {"workers": 1}, "llm": dead_llm}, env={})
    with Engine.open(settings=settings) as opened:
        assert opened.ingest([docs]).ok == 3
        got = asyncio.run(local(opened).answer("What does aspirin do?", top_n=3))
    assert got.generator == "extractive" and got.answer.startswith("[openai failed")
    assert len({c.n for c in got.citations}) >= 2, got.answer  # else both orders agree on what is cited
    by_n = {s.n: s.chunk_id for s in got.sources}
    assert [by_n[c.n] for c in got.citations] == [c.chunk_id for c in got.citations]


def test_a_filter_is_refused_until_the_engine_takes_one(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = local(engine)
    monkeypatch.setattr("fanrag.mcp.tools.supports_filter", lambda _engine: False)  # an engine without filters
    with pytest.raises(QueryError, match="filters are not supported"):
        asyncio.run(tools.search("aspirin", filter={"source": "aspirin.txt"}))
    assert asyncio.run(tools.search("aspirin", filter={})).chunks  # an empty filter is no filter
    # Once the engine's query takes ``filter``, the tool hands it over as given.
    seen: list[Any] = []
    real = engine.aquery

    async def aquery(text: str, *, filter: Any = None, **kw: Any) -> Any:
        seen.append(filter)
        return await real(text, **kw)

    monkeypatch.setattr("fanrag.mcp.tools.supports_filter", lambda _engine: True)
    monkeypatch.setattr(engine, "aquery", aquery)
    asyncio.run(tools.answer("aspirin", filter="source = 'aspirin.txt'"))
    assert seen == ["source = 'aspirin.txt'"]


def test_a_filter_reaches_every_branch_once_the_engine_takes_one(engine: Engine) -> None:
    if not supports_filter(engine):
        pytest.skip("this engine's query takes no filter yet")
    tools = remote(engine)
    found = asyncio.run(tools.search("aspirin volcanic ash", top_n=5, filter={"source": {"glob": "**/volcano.md"}}))
    assert found.chunks and {c.source for c in found.chunks} == {"volcano.md"}
    assert asyncio.run(tools.search("aspirin", filter='source:"**/nothing-*.pdf"')).chunks == []
    with pytest.raises(QueryError, match="bad filter"):
        asyncio.run(tools.answer("aspirin", filter={"year": {"between": 1}}))


def test_status_names_the_home_by_transport(engine: Engine, index: SimpleNamespace) -> None:
    st = asyncio.run(local(engine).status())
    assert st.home == str(index.home.resolve()) and st.documents.committed >= 2 and st.ingest
    assert st.vectors == st.keyword_chunks == st.chunks
    assert asyncio.run(remote(engine).status()).home == index.home.name


def test_ingest_keeps_to_the_root_and_names_what_failed(engine: Engine, index: SimpleNamespace) -> None:
    tools = remote(engine)
    outside = str(index.outside / "secret.txt")
    for path in (outside, "../" + index.outside.name, "sub/secret.txt"):  # the last: a symlink out
        with pytest.raises(AccessDenied, match="outside server.ingest_root"):
            asyncio.run(tools.ingest([path], bearer=WRITE_TOKEN))
    with pytest.raises(AccessDenied, match="invalid paths: paths: List should have at least 1 item"):
        asyncio.run(tools.ingest([], bearer=WRITE_TOKEN))
    summary = asyncio.run(tools.ingest(["sub"], bearer=WRITE_TOKEN))
    assert summary.ok == 1 and [f.source for f in summary.failed] == ["sub/secret.txt"]
    assert "outside the ingest root" in summary.failed[0].reason and "\n" not in summary.failed[0].reason
    hits = asyncio.run(tools.search("launch code of the outside file", top_n=3)).chunks
    assert all("launch code" not in h.text for h in hits)  # the symlinked file was never read


def test_ingest_needs_the_write_token_over_http_only(engine: Engine, index: SimpleNamespace) -> None:
    tools = remote(engine)
    for bearer in (None, "", "wrong", WRITE_TOKEN + "x"):
        with pytest.raises(AccessDenied, match="missing or wrong bearer token"):
            asyncio.run(tools.ingest(["aspirin.txt"], bearer=bearer))
    assert asyncio.run(local(engine).ingest(["aspirin.txt"])).unchanged == 1  # stdio: the local user
    with pytest.raises(AccessDenied, match="ingest is off"):
        asyncio.run(McpTools(engine, Access()).ingest(["aspirin.txt"]))
