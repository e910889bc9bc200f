from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanrag.errors import MissingExtraError, QueryError
from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.factory import create_generator
from fanrag.retrieve.generate import (
    EXTRACTIVE_LABEL,
    NO_SOURCES,
    ExtractiveGenerator,
    LlamaCppGenerator,
    OpenAIGenerator,
    build_messages,
    parse_citations,
)
from fanrag.settings import LLMSettings
from fanrag.types import Hit

SOURCES = [
    Hit("c1", 1.0, doc_id="d1", source="/a.pdf", page=3,
        text="Aspirin reduces inflammation by blocking cyclooxygenase. It was first sold in 1899."),
    Hit("c2", 0.9, doc_id="d2", source="/b.txt", page=0,
        text="Volcanoes erupt when magma rises. Ash clouds disrupt flights for days."),
    Hit("c3", 0.8, doc_id="d3", source="/c.txt", page=7,
        text="Stomach bleeding is a known side effect of aspirin taken daily. Doctors weigh the risk."),
]


def test_extractive_quotes_the_best_sentences_with_citations() -> None:
    ans = ExtractiveGenerator(max_sentences=2).generate("aspirin side effects stomach", SOURCES)
    assert ans.extractive and ans.backend == "extractive"
    lines = ans.text.splitlines()
    assert lines[0] == EXTRACTIVE_LABEL
    assert lines[1] == "Stomach bleeding is a known side effect of aspirin taken daily. [3]"
    assert lines[2] == "Aspirin reduces inflammation by blocking cyclooxygenase. [1]"
    assert [(c.n, c.doc_id, c.page, c.chunk_id) for c in ans.citations] == [(1, "d1", 3, "c1"), (3, "d3", 7, "c3")]


def test_extractive_without_matches_or_sources() -> None:
    assert ExtractiveGenerator().generate("quantum chromodynamics", SOURCES).citations == []
    assert ExtractiveGenerator().generate("aspirin", []).text == NO_SOURCES


def test_parse_citations_maps_numbers_back_and_ignores_unknown_ones() -> None:
    cits = parse_citations("Aspirin helps [1]. It can bleed [3, 1][2]; see also [9] and [x].", SOURCES)
    assert [(c.n, c.chunk_id, c.doc_id, c.source, c.page) for c in cits] == [
        (1, "c1", "d1", "/a.pdf", 3), (3, "c3", "d3", "/c.txt", 7), (2, "c2", "d2", "/b.txt", 0)]


def test_prompt_numbers_the_sources() -> None:
    msgs = build_messages("Why?", SOURCES[:2])
    assert "[n]" not in msgs[0]["content"] and "[1]" in msgs[0]["content"]
    assert msgs[1]["content"].startswith("Sources:\n\n[1] (/a.pdf, page 3)\nAspirin")
    assert "[2] (/b.txt)\nVolcanoes" in msgs[1]["content"] and msgs[1]["content"].endswith("Question: Why?\n"
                                                                                          "Answer with [n] citations:")


def _gen(url: str) -> OpenAIGenerator:
    cfg = LLMSettings(backend="openai", url=url + "/v1", model="tiny")
    return OpenAIGenerator(cfg, ChatClient(cfg.url, cfg.model, max_retries=0, timeout_s=5))


REPLY = "Aspirin blocks cyclooxygenase [1], but daily use can cause stomach bleeding [3]."


def test_openai_generator_plain(serve: Any, openai_app: Any) -> None:
    app = openai_app(REPLY)
    ans = _gen(serve(app)).generate("aspirin risks", SOURCES)
    assert ans.text == REPLY and not ans.extractive and ans.backend == "openai"
    assert [c.chunk_id for c in ans.citations] == ["c1", "c3"]
    body = app.state.requests[0]
    assert body["stream"] is False and body["model"] == "tiny" and "[3] (/c.txt, page 7)" in body["messages"][1]["content"]


def test_openai_generator_streams_tokens(serve: Any, openai_app: Any) -> None:
    app = openai_app(REPLY)
    got: list[str] = []
    ans = _gen(serve(app)).generate("aspirin risks", SOURCES, on_token=got.append)
    assert len(got) > 3 and "".join(got) == REPLY and ans.text == REPLY
    assert app.state.requests[0]["stream"] is True
    assert [c.n for c in ans.citations] == [1, 3]


def test_openai_generator_errors_are_query_errors(serve: Any, dead_url: str) -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    calls = []

    @app.post("/v1/chat/completions")
    async def busy() -> JSONResponse:
        calls.append(1)
        return JSONResponse({"error": "overloaded"}, status_code=503, headers={"Retry-After": "0"})

    cfg = LLMSettings(backend="openai", url=serve(app) + "/v1")
    with pytest.raises(QueryError, match="HTTP 503"):
        OpenAIGenerator(cfg, ChatClient(cfg.url, "", max_retries=2)).generate("q", SOURCES)
    assert len(calls) == 3  # the shared backoff retried the 503 twice
    with pytest.raises(QueryError, match="ConnectError"):
        _gen(dead_url).generate("q", SOURCES)


def test_llama_cpp_backend_needs_the_llm_extra_or_a_model(tmp_path: Any) -> None:
    gen = create_generator(LLMSettings(backend="llama-cpp", gguf=str(tmp_path / "missing.gguf")))
    assert isinstance(gen, LlamaCppGenerator)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"fanrag\[llm\]"):
            gen.generate("q", SOURCES)
    else:
        with pytest.raises(ValueError):  # llama-cpp refuses a model path that does not exist
            gen.generate("q", SOURCES)



@given(st.text(max_size=120), st.lists(st.text(max_size=300), min_size=1, max_size=5))
def test_extractive_citations_always_point_at_given_sources(query: str, texts: list[str]) -> None:
    hits = [Hit(f"c{i}", 1.0, doc_id=f"d{i}", text=t) for i, t in enumerate(texts)]
    ans = ExtractiveGenerator().generate(query, hits)
    for c in ans.citations:
        assert 1 <= c.n <= len(hits) and c.chunk_id == hits[c.n - 1].chunk_id
        assert f"[{c.n}]" in ans.text


def test_stem_and_code_detection() -> None:
    from fanrag.retrieve.text import looks_like_code, stem

    assert [stem(w) for w in ["tasks", "cancelled", "cancelling", "studies", "is", "bus"]] == [
        "task", "cancel", "cancel", "study", "is", "bus"]
    assert looks_like_code('task = asyncio.create_task(main())') and looks_like_code("# Cancel our worker tasks.")
    assert not looks_like_code("To cancel a running Task use the cancel() method.")


def test_extractive_prefers_prose_over_code() -> None:
    hits = [Hit("c1", 1.0, doc_id="d1", text="task = asyncio.create_task(cancel_me()) task.cancel() cancel task. "
                                             "To cancel a running Task use the cancel() method.")]
    ans = ExtractiveGenerator(max_sentences=1).generate("How do I cancel a task?", hits)
    assert ans.text.splitlines()[1] == "To cancel a running Task use the cancel() method. [1]"
