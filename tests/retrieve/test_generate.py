from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanrag.errors import MissingExtraError, QueryError
from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.extractive import Scoring, VectorCache
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
from fanrag.retrieve.grounding import NOT_IN_SOURCES, SupportChecker, cited_sentences, declines
from fanrag.retrieve.text import passages, sentences, words
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
        with pytest.raises(MissingExtraError, match=r"fanrag\[llm\]") as exc:
            gen.generate("q", SOURCES)
        assert "compiles llama.cpp from source" in str(exc.value) and "docs/llm.md" in str(exc.value)
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


# ------------------------------------------------------------------------------- passages and selection


class ConceptEmbedder:
    """Words stand for hand-picked concepts (synonyms share an axis); a text is its bag of concepts, plus a
    small constant so no vector is zero. Records what it embedded."""

    name, dim, batch_size = "concepts", 8, 8
    CONCEPTS: ClassVar[dict[str, int]] = {"stop": 0, "halt": 0, "cancel": 0, "task": 1, "job": 1, "jobs": 1, "status": 2, "listed": 2,
                                          "command": 2, "id": 3}

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in words(text):
            if w in self.CONCEPTS:
                v[self.CONCEPTS[w]] += 1.0
        v[-1] = 0.1
        return v / np.linalg.norm(v)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    embed_batch = embed

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


# The answer to "How do I halt a job?" shares no word with it; the other source shares "job".
WORKERS = [
    Hit("w1", 1.0, doc_id="dw1", source="/workers.md", text="Workers\n\nTo stop a running task, call its cancel method. "
        "The task then ends at its next await. Logs are kept for a week."),
    Hit("w2", 0.9, doc_id="dw2", source="/jobs.md", text="Each job has an id. Jobs are listed by the status command."),
]


def test_the_embedder_finds_the_answer_that_shares_no_word_with_the_question() -> None:
    plain = ExtractiveGenerator().generate("How do I halt a job?", WORKERS)
    assert plain.text.splitlines()[1:] == ["Each job has an id. [2]"]  # the one passage that says "job"
    emb = ConceptEmbedder()
    ans = ExtractiveGenerator(emb).generate("How do I halt a job?", WORKERS)
    # stop/task = halt/job by meaning; the next sentence is picked too and, as its neighbour, merged into
    # one quote; [2]'s sentences still match the words
    assert ans.text.splitlines() == [
        EXTRACTIVE_LABEL,
        "To stop a running task, call its cancel method. The task then ends at its next await. [1]",
        "Each job has an id. [2]",
    ]
    assert [(c.n, c.chunk_id) for c in ans.citations] == [(1, "w1"), (2, "w2")]
    # passages are embedded under their heading
    assert "Workers To stop a running task, call its cancel method." in emb.embedded


def test_passages_embedded_are_capped_and_cached() -> None:
    emb = ConceptEmbedder()
    gen = ExtractiveGenerator(emb, scoring=Scoring(max_embed=2))
    gen.generate("How do I halt a job?", WORKERS)
    # the passage with a term score (it says "job"), then the first one of the best-ranked source
    assert emb.embedded == ["Workers To stop a running task, call its cancel method.", "Each job has an id."]
    gen.generate("How do I halt a job?", WORKERS)
    assert len(emb.embedded) == 2  # the second time from the cache


def test_vector_cache_evicts_the_least_recently_used() -> None:
    emb = ConceptEmbedder()
    cache = VectorCache(emb, size=2)
    cache.vectors(["stop", "job"])
    cache.vectors(["stop", "status"])  # "job" is now the oldest and goes
    cache.vectors(["stop", "job"])
    assert emb.embedded == ["stop", "job", "status", "job"]
    assert np.allclose(cache.vectors(["job"])[0], emb.embed_query("job"))


def test_neighbouring_sentences_merge_into_one_quote_and_others_do_not() -> None:
    text = ("Magma rises through the crust. The volcano erupts when the magma reaches the surface. "
            "Ash clouds follow the eruption of the volcano.\n\nTourism is the main industry. "
            "The volcano erupts every decade.")
    hits = [Hit("v", 1.0, doc_id="dv", text=text)]
    ans = ExtractiveGenerator(max_sentences=3, per_source=3).generate("when does the volcano erupt", hits)
    # the short sentence with both terms scores best; sentences 2 and 3 are neighbours in one paragraph
    # (one quote), the best one is in the next paragraph (its own quote)
    assert ans.text.splitlines()[1:] == [
        "The volcano erupts every decade. [1]",
        "The volcano erupts when the magma reaches the surface. Ash clouds follow the eruption of the volcano. [1]",
    ]


FACTS = """Israel: Government

# Israel: Government

## Capital
name: Jerusalem
geographic coordinates: 31 46 N, 35 14 E

## Internet country code
.il
"""

TABLE = """Balance sheet

Current assets | As Reported | Adjustments | Balances without Topic 606
Inventories . | 1,571.7 | (3.1) | 1,568.6
Current liabilities |  |
Other accrued liabilities | 691.6 | (1.1) | 690.5
"""


def test_records_and_table_rows_are_passages_under_their_headings() -> None:
    got = [(p.kind, p.headings, p.header, p.text) for p in passages(FACTS)]
    assert got == [
        ("line", ("Israel: Government", "Capital"), "", "name: Jerusalem"),
        ("line", ("Israel: Government", "Capital"), "", "geographic coordinates: 31 46 N, 35 14 E"),
        ("line", ("Israel: Government", "Internet country code"), "", ".il"),
    ]
    assert [(p.header, p.text) for p in passages("| Year | Sales |\n|---|:--:|\n| 2019 | 12 |")] == [
        ("Year | Sales", "2019 | 12")]  # a Markdown table's rule is no row
    # a line that ends in a colon introduces what follows: prose, not a record
    assert [(p.kind, p.headings) for p in passages("Note 4\n\nAccrued liabilities consist of the following:")] == [
        ("sentence", ("Note 4",))]
    header = "Current assets | As Reported | Adjustments | Balances without Topic 606"
    assert [(p.kind, p.headings, p.header, p.text) for p in passages(TABLE)] == [
        ("row", ("Balance sheet",), header, "Inventories . | 1,571.7 | (3.1) | 1,568.6"),
        ("row", ("Balance sheet",), header, "Current liabilities |"),
        ("row", ("Balance sheet",), header, "Other accrued liabilities | 691.6 | (1.1) | 690.5"),
    ]


def test_record_and_row_quotes_carry_their_heading_and_column_names() -> None:
    ans = ExtractiveGenerator().generate("What is the capital of Israel?", [Hit("f", 1.0, doc_id="df", text=FACTS)])
    assert ans.text.splitlines()[1:] == ["Capital \u2014 name: Jerusalem; geographic coordinates: 31 46 N, 35 14 E [1]"]
    ans = ExtractiveGenerator().generate("inventories balances without topic 606",
                                         [Hit("t", 1.0, doc_id="dt", text=TABLE)])
    # the row with no values is not quotable; the two others are neighbours only through it: two quotes
    assert ans.text.splitlines()[1:] == [
        "Inventories: As Reported 1,571.7, Adjustments (3.1), Balances without Topic 606 1,568.6 [1]",
        "Other accrued liabilities: As Reported 691.6, Adjustments (1.1), Balances without Topic 606 690.5 [1]",
    ]


def test_sentences_keep_initials_and_abbreviations() -> None:
    assert sentences("The Great Gatsby is a novel by F. Scott Fitzgerald. Set in the Jazz Age. Josephus "
                     "(c. 37 - c. 100) was a historian. He met Dr. Smith. It was 3.5 m. Then it ended.") == [
        "The Great Gatsby is a novel by F. Scott Fitzgerald.", "Set in the Jazz Age.",
        "Josephus (c. 37 - c. 100) was a historian.", "He met Dr. Smith.", "It was 3.5 m.", "Then it ended."]


def test_semicolons_in_prose_are_not_code() -> None:
    from fanrag.retrieve.text import looks_like_code

    assert not looks_like_code("It borders Algeria to the east; the Spanish exclaves lie along the north.")
    assert looks_like_code("x = compute(y);") and looks_like_code("cancel();")


def test_factory_and_retriever_give_the_generators_the_embedder(corpus: Any) -> None:
    from fanrag.retrieve.retriever import Retriever

    emb = ConceptEmbedder()
    gen = create_generator(LLMSettings(), emb)
    assert isinstance(gen, ExtractiveGenerator) and gen.vectors is not None and gen.vectors.embedder is emb
    assert create_generator(LLMSettings()).vectors is None  # type: ignore[attr-defined]
    assert create_generator(LLMSettings(extractive_embed=0), emb).vectors is None  # type: ignore[attr-defined]
    assert create_generator(LLMSettings(extractive_embed=3), emb).scoring.max_embed == 3  # type: ignore[attr-defined]
    llm = create_generator(LLMSettings(backend="openai", url="http://127.0.0.1:9/v1"), emb)
    assert isinstance(llm, OpenAIGenerator) and llm.checker is not None and llm.checker.vectors is not None
    assert llm.checker.vectors.embedder is emb
    off = create_generator(LLMSettings(backend="openai", url="http://127.0.0.1:9/v1", check_support=False), emb)
    assert off.checker is None  # type: ignore[attr-defined]
    r = Retriever(corpus.settings, corpus.stores, corpus.embedder, corpus.extractor)
    try:
        assert r.generator.vectors.embedder is corpus.embedder  # type: ignore[attr-defined]
    finally:
        r.close()


# ------------------------------------------------------------------------------------------- grounding

ANSWER = ("Aspirin blocks cyclooxygenase, which reduces inflammation [1]. It was first sold in 1899 [1]. "
          "Taken daily, aspirin can cause stomach bleeding. [3] It was first sold in 1921 [1]. "
          "Aspirin cures volcanic ash poisoning [2]. Aspirin is cheap. In short: [1][3]")


def test_answer_sentences_carry_their_citations() -> None:
    assert cited_sentences(ANSWER) == [
        ("Aspirin blocks cyclooxygenase, which reduces inflammation [1].", (1,)),
        ("It was first sold in 1899 [1].", (1,)),
        ("Taken daily, aspirin can cause stomach bleeding. [3]", (3,)),  # the marker after the full stop
        ("It was first sold in 1921 [1].", (1,)),
        ("Aspirin cures volcanic ash poisoning [2].", (2,)),
        ("Aspirin is cheap.", ()),
        ("In short: [1][3]", (1, 3)),
    ]
    assert cited_sentences("- Bleeding [3, 1]\n- Ash [2; 9]") == [("- Bleeding [3, 1]", (3, 1)), ("- Ash [2; 9]", (2, 9))]


def test_unsupported_sentences_are_flagged_with_the_reason() -> None:
    got = [(s.index, s.supported, s.reason) for s in SupportChecker().check(ANSWER, SOURCES)]
    assert got == [
        (0, True, ""),  # paraphrase of [1]: every content term is in it
        (1, True, ""),
        (2, True, ""),  # 5 of its 6 terms are in [3] ("cause" is not)
        (3, False, "numbers not in the cited sources: 1921"),
        (4, False, "no cited source supports it"),  # [2] is about volcanoes, not aspirin
        (5, False, "cites no source"),
        (6, True, ""),  # nothing to check in "In short:"
    ]


def test_a_sentence_citing_two_sources_may_take_a_part_from_each() -> None:
    answer = "Aspirin blocks cyclooxygenase but causes stomach bleeding [1][3]. It has no cure for ash [9]."
    got = SupportChecker().check(answer, SOURCES)
    assert [(s.supported, s.cites, s.reason) for s in got] == [
        (True, (1, 3), ""), (False, (), "cites no given source: [9]")]
    # alone, neither source holds enough of it
    assert not SupportChecker().check("Aspirin blocks cyclooxygenase but causes stomach bleeding [3].", SOURCES)[0].supported


def test_a_paraphrase_is_supported_by_meaning() -> None:
    # "halt" and "job" are not in [1]'s words; the embedder puts them next to "stop" and "task"
    answer = "Halt the job with cancel [1]."
    assert not SupportChecker().check(answer, WORKERS)[0].supported
    got = SupportChecker(VectorCache(ConceptEmbedder())).check(answer, WORKERS)[0]
    assert got.supported and got.support > 0.9
    wrong = SupportChecker(VectorCache(ConceptEmbedder())).check("Halt the job with cancel [2].", WORKERS)[0]
    assert not wrong.supported  # [2] lists jobs; it says nothing about stopping them


def test_the_decline_is_recognised_and_never_flagged() -> None:
    assert declines(NOT_IN_SOURCES) and declines("the sources do not contain the answer to that.")
    assert not declines("Aspirin blocks cyclooxygenase [1].")
    assert SupportChecker().check(NOT_IN_SOURCES, SOURCES)[0].supported


def _checked_gen(url: str, **kw: Any) -> OpenAIGenerator:
    cfg = LLMSettings(backend="openai", url=url + "/v1", model="tiny", **kw)
    return OpenAIGenerator(cfg, ChatClient(cfg.url, cfg.model, max_retries=0, timeout_s=5))


@pytest.mark.parametrize("stream", [False, True])
def test_model_answers_come_back_with_their_flags(serve: Any, openai_app: Any, stream: bool) -> None:
    url = serve(openai_app(ANSWER))
    got: list[str] = []
    ans = _checked_gen(url).generate("aspirin", SOURCES, on_token=got.append if stream else None)
    assert ans.text == ANSWER and ans.unsupported == [3, 4, 5] and not ans.declined
    assert "".join(got) == (ANSWER if stream else "")
    assert ans.support[3].reason == "numbers not in the cited sources: 1921"


def test_the_prompt_asks_for_citations_and_the_decline(serve: Any, openai_app: Any) -> None:
    app = openai_app(NOT_IN_SOURCES)
    ans = _checked_gen(serve(app)).generate("Who won the 1950 World Cup?", SOURCES)
    assert ans.declined and ans.unsupported == [] and ans.citations == []
    system = app.state.requests[0]["messages"][0]["content"]
    assert "[1]" in system and f'"{NOT_IN_SOURCES}"' in system


def test_checking_can_be_turned_off(serve: Any, openai_app: Any) -> None:
    ans = _checked_gen(serve(openai_app(ANSWER)), check_support=False).generate("aspirin", SOURCES)
    assert ans.support == [] and ans.unsupported == []


def test_query_result_surfaces_the_flags(corpus: Any) -> None:
    from fanrag.retrieve.generate import Answer
    from fanrag.retrieve.results import QueryResult

    support = SupportChecker().check("Aspirin is cheap.", SOURCES)
    res = QueryResult.build(Answer("Aspirin is cheap.", [], backend="openai", extractive=False, support=support),
                            query="q", hits=[], retrieval=None, rerank=None)  # type: ignore[arg-type]
    assert res.unsupported == [0]
    assert res.grounding() == {"checked": True, "declined": False, "unsupported": [0], "sentences": [
        {"index": 0, "text": "Aspirin is cheap.", "cites": [], "support": 0.0, "supported": False,
         "reason": "cites no source"}]}
    quoted = QueryResult.build(Answer("x"), query="q", hits=[], retrieval=None, rerank=None)  # type: ignore[arg-type]
    assert quoted.grounding() is None


def test_query_json_has_grounding_for_a_model_answer_only(corpus: Any, serve: Any, openai_app: Any) -> None:
    from fanrag.retrieve.retriever import Retriever

    url = serve(openai_app("Tea has caffeine [1]. Coffee is a fruit."))
    s = corpus.settings.replace(llm={"backend": "openai", "url": url + "/v1", "model": "tiny"})
    with Retriever(s, corpus.stores, corpus.embedder, corpus.extractor) as r:
        d = r.query("caffeine in tea").to_dict()
    assert d["grounding"]["checked"] and d["grounding"]["unsupported"] == [1]
    assert d["grounding"]["sentences"][1]["reason"] == "cites no source"
    with Retriever(corpus.settings, corpus.stores, corpus.embedder, corpus.extractor) as r:
        assert "grounding" not in r.query("caffeine in tea").to_dict()


# ---------------------------------------------------------------------------------------- chat client


def test_a_stream_error_event_is_a_query_error(serve: Any) -> None:
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def events() -> Any:
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'Aspirin '}}]})}\n\n"
            yield f"data: {json.dumps({'error': {'message': 'context length exceeded', 'code': 400}})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    got: list[str] = []
    with pytest.raises(QueryError, match="mid-stream: context length exceeded"):
        _checked_gen(serve(app)).generate("q", SOURCES, on_token=got.append)
    assert got == ["Aspirin "]


def test_opening_a_stream_is_retried(serve: Any) -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    calls: list[int] = []

    @app.post("/v1/chat/completions")
    async def flaky() -> Any:
        calls.append(1)
        if len(calls) == 1:  # e.g. Ollama or vLLM still loading the model
            return JSONResponse({"error": "loading model"}, status_code=503, headers={"Retry-After": "0"})

        async def events() -> Any:
            for piece in ("Aspirin blocks ", "cyclooxygenase [1]."):
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': 5}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    cfg = LLMSettings(backend="openai", url=serve(app) + "/v1")
    got: list[str] = []
    ans = OpenAIGenerator(cfg, ChatClient(cfg.url, "", max_retries=1)).generate("q", SOURCES, on_token=got.append)
    assert len(calls) == 2 and got == ["Aspirin blocks ", "cyclooxygenase [1]."]
    assert ans.text == "Aspirin blocks cyclooxygenase [1]." and ans.unsupported == []


def test_figures_are_compared_as_numbers() -> None:
    table = [Hit("t", 1.0, doc_id="dt", text=TABLE)]
    same, changed = SupportChecker().check(
        "Inventories without Topic 606 were 1568.6 [1]. Inventories without Topic 606 were 1,586.6 [1].", table)
    assert same.supported  # "1,568.6" in the table
    assert (changed.supported, changed.reason) == (False, "numbers not in the cited sources: 1586.6")


def test_a_row_is_quoted_with_its_column_names_when_it_has_them() -> None:
    from fanrag.retrieve.extractive import render_row
    from fanrag.retrieve.text import Passage

    row = "Lease liabilities | (12) | (104)"
    assert render_row(Passage(row, "row", 0, (), "| 2019 | 2018")) == "Lease liabilities: 2019 (12), 2018 (104)"
    assert render_row(Passage(row, "row", 0, (), "Item | |")) == row  # nameless columns: as it is
    assert render_row(Passage(row, "row", 0, (), "Item | 2019")) == row  # cells and names do not line up


@given(st.text(alphabet=st.sampled_from(list("ab1 .:|#\n-")), max_size=200))
def test_passages_quote_only_the_chunks_own_words(text: str) -> None:
    have = set(words(text))
    for p in passages(text):
        assert set(words(p.text)) <= have and set(words(p.context)) <= have
