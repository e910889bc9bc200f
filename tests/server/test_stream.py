"""``POST /query`` with ``"stream": true`` against a real ``fanrag serve``: server-sent events in the order
sources, token..., timings, done; sources before the model writes a word; errors as a status before the
stream and as an ``error`` event in it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from fanrag.retrieve.phases import Done
from fanrag.settings import Settings

from .conftest import LLM_REPLY, read_events

QUESTION = "What does volcanic ash from Mount Etna disrupt?"


def stream(url: str, headers: dict[str, str], **body: Any) -> list[tuple[str, Any]]:
    with httpx.stream("POST", url + "/query", json={"query": QUESTION, "stream": True, **body}, headers=headers,
                      timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.read()
        return list(read_events(r))


def check_order(events: list[tuple[str, Any]]) -> None:
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-2:] == ["timings", "done"], names
    assert set(names[1:-2]) <= {"token"} and "token" in names


def test_extractive_answer_streams_sources_token_timings_done(served: Any) -> None:
    events = stream(served.url, served.read, top_n=3)
    check_order(events)
    data = dict(events)
    sources = data["sources"]["sources"]
    assert [s["n"] for s in sources] == [1, 2, 3] and sources[0]["source"] == "volcano.md"  # no absolute path
    assert {"chunk_id", "doc_id", "page", "score", "text"} <= set(sources[0])
    tokens = "".join(d["text"] for e, d in events if e == "token")
    done = data["done"]
    assert tokens == done["answer"] and done["generator"] == "extractive" and done["extractive"]
    assert "Mount Etna" in done["answer"] and done["citations"][0]["chunk_id"] == sources[0]["chunk_id"]
    # the timings: every default branch, shard searches nested under theirs, then the merge steps
    timings = data["timings"]
    assert set(timings["timings"]["branches"]) == set(Settings().retrieval.branches)
    names = [s["name"] for s in timings["spans"]]
    assert {"transform", "branch:dense", "branch:bm25", "fuse", "fetch", "rerank", "generate"} <= set(names)
    shards = [s for s in timings["spans"] if s["name"].startswith("shard:")]
    assert len([s for s in shards if s["parent"] == "branch:dense"]) == Settings().hnsw.shards
    # what the sources event knew: the steps before generation, no more
    early = {s["name"] for s in data["sources"]["spans"]}
    assert "rerank" in early and "generate" not in early


def test_sources_go_out_before_the_model_writes(llm_served: Any) -> None:
    llm = llm_served.llm
    llm.gate.clear()  # the model takes the request and writes nothing until the gate opens
    try:
        with httpx.stream("POST", llm_served.url + "/query", json={"query": QUESTION, "stream": True},
                          headers=llm_served.read, timeout=60) as r:
            assert r.status_code == 200
            events = read_events(r)
            first = next(events)
            assert first[0] == "sources" and first[1]["sources"][0]["source"] == "volcano.md"
            llm.gate.set()
            rest = list(events)
    finally:
        llm.gate.set()
    events_all = [first, *rest]
    check_order(events_all)
    tokens = [d["text"] for e, d in events_all if e == "token"]
    assert len(tokens) == len(re.findall(r"\S+\s*", LLM_REPLY))  # streamed word by word
    done = dict(events_all)["done"]
    assert "".join(tokens).strip() == done["answer"] == LLM_REPLY and done["generator"] == "openai"
    # [1] is the first source of the prompt, as the sources event numbered them
    assert done["citations"][0]["chunk_id"] == first[1]["sources"][0]["chunk_id"]
    prompt = llm.requests[-1]["messages"][1]["content"]
    assert first[1]["sources"][0]["text"].strip() in prompt and llm.requests[-1]["stream"] is True


def test_a_bad_query_is_a_status_before_any_event(served: Any) -> None:
    r = httpx.post(served.url + "/query", json={"query": "x", "stream": True, "branches": ["nope"]},
                   headers=served.read)
    assert r.status_code == 422
    r = httpx.post(served.url + "/query", json={"query": "x", "stream": True, "top_n": 50}, headers=served.read)
    assert r.status_code == 422 and "retrieval.candidates" in r.json()["detail"]
    r = httpx.post(served.url + "/query", json={"query": "   ", "stream": True}, headers=served.read)
    assert r.status_code == 400 and r.json() == {"detail": "the query is empty"}  # the retriever's own error
    assert httpx.post(served.url + "/query", json={"query": "x", "stream": True}).status_code == 401


class _Broken:
    """An engine whose query fails after its sources went out."""

    def __init__(self, engine: Any) -> None:
        self.real = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def astream(self, text: str, **kw: Any) -> Any:  # the engine's front door, over the broken retriever
        return self.retriever.astream(text, **kw)

    @property
    def retriever(self) -> Any:
        real = self.real.retriever

        class Retriever:
            async def astream(self, text: str, **kw: Any) -> Any:
                async for phase in real.astream(text, **kw):
                    if isinstance(phase, Done):
                        raise OSError("the disk went away at /srv/secret/path")
                    yield phase

        return Retriever()


def test_a_failure_mid_stream_is_an_error_event(tmp_path: Any, corpus_engine: Any) -> None:
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app

    with (TestClient(create_app(corpus_engine.settings, _Broken(corpus_engine))) as client,
          client.stream("POST", "/query", json={"query": "aspirin", "stream": True}) as r):
        events = list(read_events(r))
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-1] == "error" and "done" not in names, names
    detail = events[-1][1]["detail"]
    assert detail == "internal error: OSError (see the server log)"  # the message stays in the log


@pytest.fixture
def corpus_engine(tmp_path: Any) -> Any:
    """A small real index, opened in-process (for a test that swaps a part of the engine)."""
    from fanrag.engine import Engine

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "aspirin.txt").write_text("Aspirin reduces inflammation by blocking cyclooxygenase.\n")
    engine = Engine.open(home=tmp_path / "home")
    engine.ingest([tmp_path / "docs"])
    yield engine
    engine.close()

