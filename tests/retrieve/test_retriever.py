from __future__ import annotations

import asyncio
import itertools
import time
import threading
from typing import Any

import pytest

from fanrag.errors import QueryError
from fanrag.retrieve import Retriever
from fanrag.retrieve.generate import EXTRACTIVE_LABEL

TOP_KEYS = {"answer", "citations", "hits", "timings", "spans", "rerank", "transform"}


def make(c: Any, **kw: Any) -> Retriever:
    return Retriever(c.settings, c.stores, c.embedder, c.extractor, **kw)


def test_query_finds_the_right_document_and_answers_with_citations(corpus: Any) -> None:
    r = make(corpus)
    res = r.query("How does aspirin reduce inflammation?")
    assert res.hits[0].doc_id == corpus.doc_ids["aspirin"]
    assert res.hits[0].source == "/data/aspirin.txt"
    assert res.extractive and res.generator == "extractive"
    assert res.answer.startswith(EXTRACTIVE_LABEL)
    assert "Aspirin reduces inflammation by blocking cyclooxygenase enzymes. [1]" in res.answer
    assert res.citations[0].doc_id == corpus.doc_ids["aspirin"]
    assert res.citations[0].chunk_id == res.hits[0].chunk_id
    r.close()


def test_uncommitted_chunks_are_never_returned(corpus: Any) -> None:
    r = make(corpus)
    res = r.retrieve("aspirin inflammation")
    # the ghost chunk ranks first in the raw dense and bm25 lists...
    assert res.per_branch()["bm25"][0] == corpus.pending_chunk
    # ...but is not committed, so the fused hits skip it
    assert corpus.pending_chunk not in {h.chunk_id for h in res.hits}
    assert res.hits[0].doc_id == corpus.doc_ids["aspirin"]


def test_to_dict_shape(corpus_factory: Any) -> None:
    corpus = corpus_factory(prf_terms=8)  # PRF is off by default: on here, for its trace line
    d = make(corpus).query("caffeine in tea vs coffee", top_n=3).to_dict()
    assert set(d) == TOP_KEYS
    assert len(d["hits"]) == 3
    assert set(d["hits"][0]) == {"chunk_id", "doc_id", "source", "page", "score", "text"}
    t = d["timings"]
    assert set(t["branches"]) == {"dense", "bm25", "subqueries", "graph", "hop"}
    for name, b in t["branches"].items():
        assert set(b) == {"start_ms", "end_ms", "status"} and b["end_ms"] >= b["start_ms"]
        assert b["status"] == "ok" or name == "hop" and b["status"].startswith("skipped")  # not a question
    assert {"fusion_ms", "rerank_ms", "generate_ms", "total_ms"} <= set(t)
    assert d["rerank"]["backend"] == "none" and d["rerank"]["status"].startswith("skipped")
    assert d["transform"]["subqueries"] == ["caffeine in tea", "coffee"]
    assert any(line.startswith("prf: ") for line in d["transform"]["trace"])
    assert any(line.startswith("graph: entities caffeine") for line in d["transform"]["trace"])
    assert [c["n"] for c in d["citations"]] == sorted({c["n"] for c in d["citations"]})


def test_query_is_embedded_once_and_subqueries_in_one_batch(corpus: Any) -> None:
    r = make(corpus)
    r.retrieve("What is the difference between BM25 and HNSW?")
    assert corpus.embedder.query_calls == ["What is the difference between BM25 and HNSW?"]
    assert corpus.embedder.batch_calls == [["BM25", "HNSW"]]
    # every shard searched once for the query and once per sub-question
    assert dict(corpus.stores.vectors.shard_calls) == {0: 3, 1: 3, 2: 3}


def test_per_branch_lists_for_eval(corpus_factory: Any) -> None:
    corpus = corpus_factory(prf_terms=8)  # PRF is off by default: on here, to see its list
    res = make(corpus).retrieve("What is the difference between BM25 and HNSW?")
    per = res.per_branch()
    assert {"dense", "bm25", "subqueries", "graph"} <= set(per) <= {"dense", "bm25", "subqueries", "graph", "hop"}
    assert [rl.query for rl in res.lists if rl.branch == "subqueries"] == ["BM25", "HNSW"]
    assert [rl.kind for rl in res.lists if rl.branch == "bm25"] == ["bm25", "prf"]
    assert res.per_branch_docs()["graph"][0] in {corpus.doc_ids["bm25"], corpus.doc_ids["hnsw"], corpus.doc_ids["dense"]}
    assert res.doc_ids()[:2] == [h.doc_id for h in res.hits[:2]]


def test_branches_really_run_concurrently(corpus_factory: Any, doubles: Any) -> None:
    # dense (embedding) and bm25 each wait at a two-party barrier: run one after the other they would
    # break it (BrokenBarrierError -> branch error); run concurrently both pass.
    barrier = threading.Barrier(2)
    c = corpus_factory(embedder=doubles.HashEmbedder(barrier=barrier), keywords=doubles.MemKeywords(barrier=barrier))
    res = make(c).retrieve("aspirin", branches=["dense", "bm25"])
    assert res.branches["dense"].status == "ok" and res.branches["bm25"].status == "ok"
    d, b = res.branches["dense"], res.branches["bm25"]
    assert d.start_ms < b.end_ms and b.start_ms < d.end_ms  # the intervals overlap


def test_sequential_mode_gives_the_same_ranking(corpus: Any) -> None:
    r = make(corpus)
    par = r.retrieve("caffeine in tea vs coffee")
    seq = r.retrieve("caffeine in tea vs coffee", parallel=False)
    assert [h.chunk_id for h in par.hits] == [h.chunk_id for h in seq.hits]
    # sequential branches do not overlap
    spans = sorted((t.start_ms, t.end_ms) for t in seq.branches.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_a_slow_branch_times_out_and_the_query_still_answers(corpus_factory: Any, doubles: Any) -> None:
    c = corpus_factory(keywords=doubles.MemKeywords(delay_s=1.0), branch_timeout_s=0.1)
    res = make(c).query("How does aspirin reduce inflammation?")
    assert res.retrieval.branches["bm25"].status == "timeout"
    assert not [rl for rl in res.retrieval.lists if rl.branch == "bm25"]
    assert res.hits[0].doc_id == c.doc_ids["aspirin"]


def test_a_timed_out_branch_cannot_change_the_result_it_missed(corpus_factory: Any, doubles: Any) -> None:
    # BM25 answers after the timeout and then runs PRF, which has a trace line to add: once the query
    # has returned, that line must not appear in (or be appended to) the returned result.
    c = corpus_factory(keywords=doubles.MemKeywords(delay_s=0.3), branch_timeout_s=0.1, prf_terms=8)
    res = make(c).retrieve("How does aspirin reduce inflammation?")
    before = list(res.trace)
    time.sleep(0.8)  # the branch thread finishes its first search and its PRF search meanwhile
    assert len(c.stores.keywords.queries) == 2  # it did run PRF...
    assert res.trace == before and not any(line.startswith("prf:") for line in res.trace)  # ...unseen


def test_spans_nest_shard_searches_under_their_branch_and_cover_the_query(corpus: Any) -> None:
    res = make(corpus).query("What is the difference between aspirin and insulin?")
    by_name = {s.name: s for s in res.spans}
    assert {"transform", "branch:dense", "branch:bm25", "branch:subqueries", "fuse", "fetch", "rerank",
            "generate"} <= set(by_name)
    dense = by_name["branch:dense"]
    shards = [s for s in res.spans if s.parent == "branch:dense"]
    assert len(shards) == corpus.stores.vectors.n_shards
    assert all(dense.start_ms <= s.start_ms <= s.end_ms <= dense.end_ms for s in shards)
    subq = [s for s in res.spans if s.parent == "branch:subqueries"]
    assert len(subq) == 2 * corpus.stores.vectors.n_shards and all(" q" in s.name for s in subq)
    assert by_name["generate"].end_ms <= res.total_ms + 0.5
    assert [s["name"] for s in res.to_dict()["spans"]] == [s.name for s in res.spans]
    assert res.retrieval.spans and all(s.name not in ("rerank", "generate") for s in res.retrieval.spans)


def test_a_failing_branch_is_reported_and_dropped(corpus: Any) -> None:
    corpus.stores.vectors.fail = True
    res = make(corpus).query("How does aspirin reduce inflammation?")
    assert res.retrieval.branches["dense"].status == "error: RuntimeError: vector index unavailable"
    assert res.retrieval.branches["bm25"].status == "ok"
    assert res.hits[0].doc_id == corpus.doc_ids["aspirin"]


def test_skipped_branches_say_why(corpus: Any) -> None:
    r = Retriever(corpus.settings, corpus.stores, corpus.embedder, extractor=None)
    res = r.retrieve("volcano ash")
    assert res.branches["subqueries"].status == "skipped: no sub-questions or rewrites"
    assert res.branches["graph"].status.startswith("skipped: no entity extractor")
    assert res.hits[0].doc_id == corpus.doc_ids["volcano"]


def test_branch_selection_and_unknown_branch(corpus: Any) -> None:
    r = make(corpus)
    assert set(r.retrieve("volcano", branches=["bm25"]).branches) == {"bm25"}
    with pytest.raises(QueryError, match="unknown branch 'sparse'"):
        r.retrieve("volcano", branches=["sparse"])
    with pytest.raises(QueryError, match="empty"):
        r.retrieve("   ")


def test_zero_weights_leave_only_bm25(corpus_factory: Any) -> None:
    q = "graph index for nearest neighbour search"
    res = make(corpus_factory(weights={"dense": 0.0, "subqueries": 0.0, "graph": 0.0, "prf": 0.0})).retrieve(q)
    bm25 = next(rl for rl in res.lists if rl.kind == "bm25")
    # the hits are exactly the BM25 list, in its order: nothing comes from the switched-off branches
    assert [h.chunk_id for h in res.hits] == [h.chunk_id for h in bm25.hits]


def test_no_generation_and_top_n(corpus: Any) -> None:
    res = make(corpus).query("volcano", generate=False, top_n=2)
    assert res.generator == "" and res.answer == "" and len(res.hits) == 2
    assert res.to_dict()["answer"] == "" and res.to_dict()["citations"] == []
    with pytest.raises(QueryError, match=r"retrieval.candidates"):  # was silently capped at the candidates
        make(corpus).query("volcano", top_n=corpus.settings.retrieval.candidates + 1)


def test_async_api_inside_a_running_loop(corpus: Any) -> None:
    r = make(corpus)

    async def two() -> list[str]:
        a, b = await asyncio.gather(r.aquery("volcano ash"), r.aquery("insulin glucose"))
        return [a.hits[0].doc_id, b.hits[0].doc_id]

    assert asyncio.run(two()) == [corpus.doc_ids["volcano"], corpus.doc_ids["insulin"]]


def test_llm_sources_go_in_lost_in_the_middle_order(corpus: Any, serve: Any, openai_app: Any) -> None:
    from fanrag.retrieve.chat import ChatClient
    from fanrag.retrieve.generate import OpenAIGenerator
    from fanrag.settings import LLMSettings

    app = openai_app("Caffeine blocks adenosine [1]; tea has less of it [2].")
    cfg = LLMSettings(backend="openai", url=serve(app) + "/v1", model="m")
    gen = OpenAIGenerator(cfg, ChatClient(cfg.url, cfg.model, max_retries=0))
    res = make(corpus, generator=gen).query("caffeine", top_n=4)
    prompt = app.state.requests[0]["messages"][1]["content"]
    order = [h.text for h in res.hits]  # relevance order
    in_prompt = sorted(order, key=prompt.index)
    assert in_prompt == [order[0], order[2], order[3], order[1]]  # ranks 1, 3, 4, 2
    assert not res.extractive and res.generator == "openai"
    # [1] is the best hit and [2] the third: numbers follow the prompt, not the relevance order
    assert [c.chunk_id for c in res.citations] == [res.hits[0].chunk_id, res.hits[2].chunk_id]


def test_llm_outage_falls_back_to_a_labelled_extractive_answer(corpus: Any, dead_url: str) -> None:
    from fanrag.retrieve.chat import ChatClient
    from fanrag.retrieve.generate import OpenAIGenerator
    from fanrag.settings import LLMSettings

    cfg = LLMSettings(backend="openai", url=dead_url + "/v1")
    res = make(corpus, generator=OpenAIGenerator(cfg, ChatClient(cfg.url, "", max_retries=0))).query("volcano ash")
    assert res.extractive and res.generator == "extractive"
    assert res.answer.startswith("[openai failed: llm ") and "showing the extractive answer" in res.answer
    assert res.citations[0].doc_id == corpus.doc_ids["volcano"]


def test_missing_optional_packages_name_their_extra(monkeypatch: Any) -> None:
    import sys

    from fanrag.errors import MissingExtraError
    from fanrag.retrieve.factory import create_reranker
    from fanrag.settings import RerankSettings

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r"fanrag\[st\]"):
        create_reranker(RerankSettings(backend="cross-encoder", model="x"))
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    from fanrag.server.metrics import Metrics

    with pytest.raises(MissingExtraError, match=r"fanrag\[server\]"):
        Metrics()


def test_llm_transform_feeds_the_subqueries_branch(corpus_factory: Any, serve: Any, openai_app: Any) -> None:
    import json

    reply = json.dumps({"subquestions": ["What is in coffee?", "What is in tea?"], "rewrites": ["caffeine drinks"]})
    url = serve(openai_app(reply))
    c = corpus_factory()
    s = c.settings.replace(retrieval={"transform": "llm"}, llm={"url": url + "/v1", "model": "m"})
    res = Retriever(s, c.stores, c.embedder, c.extractor).retrieve("coffee or tea?")
    assert res.transform.trace[0].startswith("llm: 2 sub-questions, 1 rewrites")
    assert [rl.query for rl in res.lists if rl.branch == "subqueries"] == [
        "What is in coffee?", "What is in tea?", "caffeine drinks"]
    assert c.embedder.batch_calls == [["What is in coffee?", "What is in tea?", "caffeine drinks"]]


def test_display_source_and_exports() -> None:
    import fanrag.retrieve as api
    from fanrag.retrieve.retriever import display_source

    assert display_source("file:///data/a%20b/c.jsonl#42") == "/data/a b/c.jsonl#42"
    assert display_source("s3://bucket/key.pdf") == "s3://bucket/key.pdf"
    assert all(getattr(api, name) is not None for name in api.__all__)


def test_merge_shards_keeps_the_best_score_per_chunk() -> None:
    from fanrag.retrieve import merge_shards
    from fanrag.stores.base import ScoredId

    parts = [[ScoredId("a", 0.9), ScoredId("b", 0.5)], [ScoredId("c", 0.7), ScoredId("a", 0.95)], []]
    assert merge_shards(parts, 2) == [ScoredId("a", 0.95), ScoredId("c", 0.7)]
