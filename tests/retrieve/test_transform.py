from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.factory import create_transformer
from fanrag.retrieve.transform import (
    LLMTransformer,
    RulesTransformer,
    decompose,
    normalize,
    parse_llm_json,
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
