from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st

from fanrag.graph.extract import RuleExtractor
from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.factory import create_transformer
from fanrag.retrieve.transform import (
    LLM_SCHEMA,
    EntityDecomposer,
    LLMTransformer,
    RulesTransformer,
    decompose,
    find_mentions,
    is_question,
    normalize,
    parse_llm_json,
    parse_llm_reply,
    prf_expand,
)
from fanrag.settings import Settings


def test_normalize() -> None:
    assert normalize("  “What  is\tBM25?”  ") == "What is BM25?"


@pytest.mark.parametrize(("query", "subs"), [
    ("What is the difference between BM25 and dense retrieval on SciFact?",
     ["BM25 on SciFact", "dense retrieval on SciFact"]),
    ("Python vs Rust for web servers", ["Python for web servers", "Rust for web servers"]),
    ("compare hnswlib with faiss", ["hnswlib", "faiss"]),
    ("How does aspirin compare to ibuprofen for headaches?", ["aspirin for headaches", "ibuprofen for headaches"]),
    ("Is aspirin safer compared with ibuprofen?", ["aspirin safer", "ibuprofen"]),
    ("What causes diabetes? How is insulin made?", ["What causes diabetes?", "How is insulin made?"]),
    ("How does aspirin reduce inflammation and what are its side effects?",
     ["How does aspirin reduce inflammation?", "what are its side effects?"]),
])
def test_decomposes_compound_and_comparison_questions(query: str, subs: list[str]) -> None:
    assert decompose(query)[0] == subs


@pytest.mark.parametrize("query", [
    "What is salt and pepper?", "Does aspirin thin the blood?", "BM25",
    # statements (claims) keep their "and"/"compared to": one assertion, not two topics
    "Crosstalk between dendritic cells and innate lymphoid cells is important in intestinal homeostasis.",
    "Lupus-prone mice have higher autoantibody titers compared to controls.",
    "APOE4 expression increases AlphaBeta production and tau phosphorylation causing neuron degeneration.",
    "Is crosstalk between dendritic cells and lymphoid cells important for gut homeostasis?",
])
def test_atomic_questions_stay_whole(query: str) -> None:
    res = RulesTransformer().transform(query)
    assert res.subqueries == [] and res.extra_queries() == []
    assert "no decomposition" in res.trace[-1]


def test_prf_expansion_weights_terms_by_document_score() -> None:
    feedback = [("caffeine blocks adenosine receptors caffeine", 3.0), ("adenosine sleep pressure", 1.0)]
    expanded, weighted = prf_expand("coffee caffeine", feedback, n_terms=2)
    # caffeine is a query term (never an expansion). P(d|q) = 3/4, 1/4; P(w|d) = tf / 5 terms, tf / 3 terms.
    # adenosine: 3/4*1/5 + 1/4*1/3 = 0.2333; blocks = receptors = 3/4*1/5 = 0.15 (tie: first seen wins)
    assert weighted == [("adenosine", pytest.approx(0.2333, abs=1e-4)), ("blocks", pytest.approx(0.15))]
    assert expanded == "coffee caffeine coffee caffeine adenosine blocks"  # the query counts twice (RM3's λ)


def test_prf_without_feedback_keeps_the_query() -> None:
    assert prf_expand("coffee", [], 5) == ("coffee", [])


def test_parse_llm_json_accepts_fenced_json_and_rejects_bad_shapes() -> None:
    raw = '```json\n{"subquestions": ["a?", "b?", "a?"], "rewrites": ["c"]}\n```'
    assert parse_llm_json(raw) == (["a?", "b?"], ["c"])
    for bad in ["no json here", '{"subquestions": "a"}', "[1, 2]", '{"rewrites": [1]}']:
        with pytest.raises((ValueError, TypeError)):
            parse_llm_json(bad)


def _llm(url: str, timeout_s: float = 2.0) -> LLMTransformer:
    return LLMTransformer(ChatClient(url + "/v1", "tiny", max_retries=0), timeout_s=timeout_s)


def test_llm_transformer_uses_the_models_json(serve: Any, openai_app: Any) -> None:
    reply = json.dumps({"subquestions": ["What does aspirin do?", "What are aspirin's side effects?"],
                        "rewrites": ["aspirin effects and risks"]})
    app = openai_app(reply)
    res = _llm(serve(app)).transform("aspirin: effects and side effects?")
    assert res.subqueries == ["What does aspirin do?", "What are aspirin's side effects?"]
    assert res.rewrites == ["aspirin effects and risks"]
    assert res.trace[0].startswith("llm: 2 sub-questions, 1 rewrites")
    sent = app.state.requests[0]
    assert sent["model"] == "tiny" and sent["messages"][-1]["content"] == "aspirin: effects and side effects?"


def test_llm_transformer_falls_back_to_rules_on_bad_json(serve: Any, openai_app: Any) -> None:
    res = _llm(serve(openai_app("Sure! Here are some sub-questions: 1. foo"))).transform("BM25 vs HNSW")
    assert res.subqueries == ["BM25", "HNSW"]
    assert res.trace[0].startswith("llm: llm returned bad JSON") and "fell back to rules" in res.trace[0]


def test_llm_transformer_falls_back_to_rules_on_timeout(serve: Any, openai_app: Any) -> None:
    res = _llm(serve(openai_app('{"subquestions": []}', delay_s=2.0)), timeout_s=0.2).transform("BM25 vs HNSW")
    assert res.subqueries == ["BM25", "HNSW"]
    assert "timed out" in res.trace[0] and "fell back to rules" in res.trace[0]


def test_llm_transformer_falls_back_when_the_endpoint_is_down(dead_url: str) -> None:
    res = _llm(dead_url).transform("compare tea and coffee")
    assert res.subqueries == ["tea", "coffee"] and "fell back to rules" in res.trace[0]


def test_create_transformer_by_name(tmp_path: Any) -> None:
    assert create_transformer(Settings(home=tmp_path)).name == "rules"
    assert create_transformer(Settings(home=tmp_path).replace(retrieval={"transform": "none"})).name == "none"
    llm = Settings(home=tmp_path).replace(retrieval={"transform": "llm"}, llm={"url": "http://127.0.0.1:9/v1"})
    assert create_transformer(llm).name == "llm"


@pytest.mark.parametrize("seed_text", ["", "vs", "compare and", "? ? ?", "a and b and c"])
def test_degenerate_inputs_do_not_decompose(seed_text: str) -> None:
    assert RulesTransformer().transform(seed_text).subqueries == []


@given(st.text(max_size=200))
def test_rules_never_fail_and_stay_bounded(text: str) -> None:
    res = RulesTransformer().transform(text)
    assert len(res.subqueries) <= 5 and all(q.strip() for q in res.subqueries)
    assert res.normalized == normalize(text)


# ------------------------------------------------------------------------- index-aware decomposition

class KnownNames:
    """A graph that knows a fixed set of (normalised) names."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def known_entities(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.names]


def _decomposer(*names: str) -> EntityDecomposer:
    return EntityDecomposer(KnownNames(*names), RuleExtractor())  # type: ignore[arg-type]


@pytest.mark.parametrize(("query", "names", "subs"), [
    ("What was the GDP of Chile in 2020, and of Peru?", ["chile", "peru"],
     ["What was the GDP of Chile in 2020?", "What was the GDP of Peru?"]),
    ("Which river is longer, the Danube or the Rhine?", ["danube", "rhine"],
     ["Which river is longer, the Danube?", "Which river is longer, the Rhine?"]),
    ("Did the composer of Carmen and the author of Dracula share a nationality?", ["carmen", "dracula"],
     ["Did the composer of Carmen share a nationality?", "Did the author of Dracula share a nationality?"]),
    ("Is Lyon larger than Marseille?", ["lyon", "marseille"], ["Is Lyon larger?", "Is Marseille larger?"]),
    ("Which opened first: the Louvre, the Prado or the Uffizi?", ["louvre", "prado", "uffizi"],
     ["Which opened first: the Louvre?", "Which opened first: the Prado?", "Which opened first: the Uffizi?"]),
    # lower case: the n-grams the graph knows stand in for the extractor's capitals
    ("was ada lovelace or charles babbage born earlier", ["ada lovelace", "charles babbage"],
     ["was ada lovelace born earlier", "was charles babbage born earlier"]),
])
def test_comparisons_split_by_the_names_the_index_knows(query: str, names: list[str], subs: list[str]) -> None:
    got, mentions = _decomposer(*names).decompose(query)
    assert got == subs and [m.name for m in mentions] == names


@pytest.mark.parametrize(("query", "names"), [
    ("Who directed Pride and Prejudice?", ["pride and prejudice", "prejudice"]),  # one title, not two sides
    ("What did Einstein write to Bohr?", ["einstein", "bohr"]),  # two names, no coordination
    ("Why did Einstein doubt Bohr and what did Heisenberg say?", ["einstein", "bohr", "heisenberg"]),  # 2 questions
    ("How tall is Lyon's cathedral, compared with Paris (the capital, or its suburbs)?", ["lyon", "paris"]),
    ("What is the population of Ghana, Togo?", ["ghana", "togo"]),  # a comma alone joins no comparison
    ("Which is older, the Danube or the Rhine?", ["danube"]),  # one side the index does not know
    ("Did Kant, whom Hegel read closely in his youth and later criticised, influence Fichte?",
     ["kant", "hegel", "fichte"]),  # more words between than a coordination has
])
def test_no_split_without_a_coordination_of_known_names(query: str, names: list[str]) -> None:
    assert _decomposer(*names).decompose(query)[0] == []


def test_find_mentions_prefers_the_longest_name_and_ignores_case_and_punctuation() -> None:
    found = find_mentions("Did Pride and Prejudice outsell pride?", ["pride", "pride and prejudice", "outsell"])
    assert [(m.name, m.start, m.end) for m in found] == [("pride and prejudice", 4, 23), ("outsell", 24, 31)]
    assert [m.name for m in find_mentions("Who wrote 2001 - A Space Odyssey?", ["2001 a space odyssey"])] == \
        ["2001 a space odyssey"]


def test_is_question() -> None:
    assert is_question("who wrote it") and is_question("Aspirin, then?")
    assert not is_question("Aspirin thins the blood.")


# ------------------------------------------------------------------------------------------ LLM path

def test_llm_asks_once_for_json_with_the_schema_and_returns_bridges(serve: Any, openai_app: Any) -> None:
    reply = json.dumps({"subquestions": ["Who wrote Carmen?", "When was that person born?"],
                        "rewrites": ["birth year of the author of Carmen", "Carmen author born", "Mérimée birth"],
                        "bridges": ["Prosper Mérimée"]})
    app = openai_app(reply)
    res = _llm(serve(app)).transform("When was the author of Carmen born?")
    assert res.bridges == ["Prosper Mérimée"] and len(res.rewrites) == 3 and len(res.subqueries) == 2
    assert res.trace == ["llm: 2 sub-questions, 3 rewrites, 1 bridges from tiny"]
    [sent] = app.state.requests  # one call for all three lists
    assert sent["response_format"] == {"type": "json_object"}
    assert json.dumps(LLM_SCHEMA) in sent["messages"][0]["content"]


def test_a_server_refusing_response_format_is_asked_again_without_it(serve: Any) -> None:
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append(body)
        if "response_format" in body:
            return JSONResponse({"error": "response_format is not supported"}, status_code=400)
        content = json.dumps({"subquestions": [], "rewrites": ["a", "b", "c"], "bridges": []})
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": content}}]})

    llm = _llm(serve(app))
    assert llm.transform("tea or coffee?").rewrites == ["a", "b", "c"]
    assert llm.transform("tea or coffee?").rewrites == ["a", "b", "c"]
    assert ["response_format" in b for b in seen] == [True, False, False]  # not sent again once refused
    assert llm.json_mode is False


class _StuckClient:
    """A chat client whose call ignores its own timeout (a server trickling bytes, a hung DNS lookup)."""

    url = "http://stuck/v1/chat/completions"
    model = "stuck"

    def complete(self, *args: Any, **kw: Any) -> str:
        time.sleep(1.5)
        return "{}"


def test_the_deadline_is_wall_clock_even_when_the_call_ignores_its_timeout() -> None:
    llm = LLMTransformer(_StuckClient(), timeout_s=0.2)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = llm.transform("compare tea and coffee")
    assert time.perf_counter() - t0 < 1.0
    assert res.subqueries == ["tea", "coffee"] and "timed out after 0.2 s" in res.trace[0]


@pytest.mark.parametrize("raw", [
    '{"subquestions": []}',  # rewrites missing
    '{"subquestions": [], "rewrites": ["' + "x" * 400 + '"]}',  # an item far too long to be a query
    '{"subquestions": [], "rewrites": [], "bridges": "Mérimée"}',  # bridges not a list
])
def test_replies_outside_the_schema_are_refused(raw: str) -> None:
    with pytest.raises(TypeError):
        parse_llm_reply(raw)


def test_a_reply_without_bridges_is_accepted_and_lists_are_cut_to_the_schema() -> None:
    reply = parse_llm_reply(json.dumps({"subquestions": [f"q{i}?" for i in range(9)], "rewrites": ["r", " ", "r"],
                                        "extra": 1}))
    assert reply.subquestions == [f"q{i}?" for i in range(5)] and reply.rewrites == ["r"] and reply.bridges == []


def test_llm_falls_back_to_rules_on_a_reply_outside_the_schema(serve: Any, openai_app: Any) -> None:
    res = _llm(serve(openai_app('{"subquestions": "BM25"}'))).transform("BM25 vs HNSW")
    assert res.subqueries == ["BM25", "HNSW"] and res.bridges == []
    assert res.trace[0].startswith("llm: llm returned bad JSON ('subquestions' must be a list of strings)")
