"""``Retriever.astream``: sources before generation starts, then the answer's deltas, then the result."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from fanrag.errors import QueryError
from fanrag.retrieve import Retriever
from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.generate import Answer, OnToken, OpenAIGenerator
from fanrag.retrieve.order import lost_in_the_middle
from fanrag.retrieve.phases import Done, Phase, Sources, Token
from fanrag.settings import LLMSettings
from fanrag.types import Hit

REPLY = "Caffeine blocks adenosine receptors [1]. Tea has less caffeine than coffee [2]."


def make(c: Any, **kw: Any) -> Retriever:
    return Retriever(c.settings, c.stores, c.embedder, c.extractor, **kw)


def llm(url: str) -> OpenAIGenerator:
    cfg = LLMSettings(backend="openai", url=url + "/v1", model="m")
    return OpenAIGenerator(cfg, ChatClient(cfg.url, cfg.model, max_retries=0, timeout_s=10))


def collect(r: Retriever, text: str, on_sources: Any = None, **kw: Any) -> list[Phase]:
    async def run() -> list[Phase]:
        out: list[Phase] = []
        async for phase in r.astream(text, **kw):
            if isinstance(phase, Sources) and on_sources:
                on_sources()
            out.append(phase)
        return out

    return asyncio.run(asyncio.wait_for(run(), 30))


def kinds(phases: list[Phase]) -> list[str]:
    return [type(p).__name__ for p in phases]


def test_extractive_answer_streams_as_one_token_between_sources_and_done(corpus: Any) -> None:
    r = make(corpus)
    phases = collect(r, "How does aspirin reduce inflammation?")
    assert kinds(phases) == ["Sources", "Token", "Done"]
    sources, token, done = phases
    assert isinstance(sources, Sources) and isinstance(token, Token) and isinstance(done, Done)
    result = done.result
    assert token.text == result.answer
    assert sources.numbered == sources.hits == result.hits  # the extractive generator numbers by relevance
    assert sources.hits[0].doc_id == corpus.doc_ids["aspirin"]
    assert {s.name for s in sources.spans} >= {"transform", "fuse", "fetch", "rerank"}
    assert "generate" not in {s.name for s in sources.spans}  # the answer had not started
    assert "generate" in {s.name for s in result.spans}
    # a streamed query ranks and answers as a plain one does
    plain = r.query("How does aspirin reduce inflammation?")
    assert [h.chunk_id for h in plain.hits] == [h.chunk_id for h in result.hits]
    assert plain.answer == result.answer and plain.citations == result.citations


def test_sources_go_out_before_the_model_is_asked(corpus: Any, serve: Any, openai_app: Any) -> None:
    app = openai_app(REPLY)
    r = make(corpus, generator=llm(serve(app)))
    asked_at_sources: list[int] = []
    phases = collect(r, "caffeine", on_sources=lambda: asked_at_sources.append(len(app.state.requests)), top_n=4)
    assert asked_at_sources == [0] and len(app.state.requests) == 1
    assert isinstance(phases[0], Sources) and isinstance(phases[-1], Done)
    tokens = [p.text for p in phases[1:-1] if isinstance(p, Token)]
    assert len(tokens) == len(phases) - 2 > 3  # the fake model streams word by word
    result = phases[-1].result
    assert "".join(tokens).strip() == result.answer == REPLY
    # [n] of the answer is the n-th source as sent: the lost-in-the-middle order of the top hits
    assert phases[0].numbered == lost_in_the_middle(result.hits)
    assert [c.chunk_id for c in result.citations] == [h.chunk_id for h in phases[0].numbered[:2]]


def test_a_failing_model_is_replaced_by_the_labelled_extractive_answer(corpus: Any, dead_url: str) -> None:
    phases = collect(make(corpus, generator=llm(dead_url)), "volcano ash")
    assert kinds(phases) == ["Sources", "Token", "Done"]
    result = phases[-1].result
    assert result.extractive and phases[1].text == result.answer
    assert result.answer.startswith("[openai failed: llm ")


class SlowModel:
    """Streams up to 400 deltas, 5 ms apart; records whether a delta was refused."""

    name = "slow"
    litm = False

    def __init__(self) -> None:
        self.sent = 0
        self.stopped = threading.Event()

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer:
        assert on_token is not None
        try:
            for i in range(400):
                on_token(f"w{i} ")
                self.sent += 1
                time.sleep(0.005)
        except QueryError:
            self.stopped.set()
            raise
        return Answer("done", [], backend=self.name, extractive=False)


def test_closing_the_stream_stops_the_model(corpus: Any) -> None:
    model = SlowModel()
    r = make(corpus, generator=model)

    async def first_token() -> str:
        phases = r.astream("coffee")
        try:
            async for phase in phases:
                if isinstance(phase, Token):
                    return phase.text
        finally:
            await phases.aclose()
        raise AssertionError("no token")

    assert asyncio.run(asyncio.wait_for(first_token(), 30)) == "w0 "
    assert model.stopped.wait(10)
    assert model.sent < 400


def test_bad_queries_fail_before_any_phase(corpus: Any) -> None:
    r = make(corpus)
    with pytest.raises(QueryError, match="empty"):
        collect(r, "   ")
    with pytest.raises(QueryError, match="top_n"):
        collect(r, "coffee", top_n=10_000)
    phases = collect(r, "coffee", generate=False)
    assert kinds(phases) == ["Sources", "Done"] and phases[-1].result.answer == ""
