from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from fanrag.errors import ConfigError, QueryError
from fanrag.retrieve import Retriever
from fanrag.retrieve.factory import create_reranker
from fanrag.retrieve.rerank import (
    CachedReranker,
    CohereReranker,
    CrossEncoderReranker,
    TEIReranker,
)
from fanrag.settings import RerankSettings

WORDS = ["aspirin", "reduces", "inflammation", "by", "blocking", "enzymes", "volcano", "ash", "magma", "coffee", "caffeine", "tea", "insulin", "glucose", "the", "a", "of", "is", "what", "does", "how", "hnsw", "bm25", "graph", "index", "search"]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: Any) -> Path:
    """A randomly initialised 2-layer BERT cross-encoder (hidden 32) with a tokenizer over WORDS."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-ce")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64, num_labels=1, initializer_range=0.2)
    BertForSequenceClassification(cfg).save_pretrained(d)
    return d


def count_forwards(ce: CrossEncoderReranker) -> list[int]:
    calls: list[int] = []
    ce.model.register_forward_hook(lambda _m, _args, _out: calls.append(1))  # one call per batch
    return calls


def test_cross_encoder_scores_in_one_batch_and_caches(tiny_cross_encoder: Path) -> None:
    ce = CrossEncoderReranker(str(tiny_cross_encoder), batch_size=4)
    calls = count_forwards(ce)
    texts = [f"{w} is a word" for w in WORDS[:7]]
    scores = ce.score("what is aspirin", texts)
    assert len(scores) == 7 and len(set(scores)) == 7
    assert len(calls) == 1  # seven pairs, one forward pass even though batch_size is 4

    cached = CachedReranker(ce, size=100)
    ids = [f"c{i}" for i in range(7)]
    again, n_cached = cached.score_ids("what is aspirin", ids, texts)
    assert again == pytest.approx(scores, abs=1e-5) and n_cached == 0 and len(calls) == 2
    _, n_cached = cached.score_ids("what is aspirin", ids, texts)
    assert n_cached == 7 and len(calls) == 2  # all from cache: no forward pass
    _, n_cached = cached.score_ids("what is aspirin", ["c0", "c9"], [texts[0], "new text"])
    assert n_cached == 1 and len(calls) == 3 and cached.hits == 8 and cached.misses == 8


def test_retriever_orders_hits_by_rerank_score(corpus: Any, tiny_cross_encoder: Path) -> None:
    s = corpus.settings.replace(rerank={"backend": "cross-encoder", "model": str(tiny_cross_encoder)})
    r = Retriever(s, corpus.stores, corpus.embedder, corpus.extractor)
    res = r.query("aspirin inflammation", top_n=5)
    assert res.rerank.status == "ok" and res.rerank.scored == len(res.retrieval.hits)
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)
    expected = r.reranker.inner.score(res.query, [h.text for h in res.retrieval.hits])
    assert scores == pytest.approx(sorted(expected, reverse=True)[:5], abs=1e-5)
    assert r.query("aspirin inflammation").rerank.cached == len(res.retrieval.hits)


def test_lru_evicts_the_oldest() -> None:
    class Len:
        name = "len"

        def score(self, query: str, texts: Any) -> list[float]:
            return [float(len(t)) for t in texts]

    c = CachedReranker(Len(), size=2)
    c.score_ids("q", ["a", "b"], ["x", "yy"])
    c.score_ids("q", ["a"], ["x"])  # touch a: b is now the oldest
    c.score_ids("q", ["c"], ["zzz"])
    assert c.score_ids("q", ["a", "c"], ["x", "zzz"]) == ([1.0, 3.0], 2)
    assert c.score_ids("q", ["b"], ["yy"])[1] == 0


def rerank_app(got: list[dict[str, Any]]) -> FastAPI:
    """Cohere- and TEI-style endpoints scoring by word overlap, returning results out of input order."""
    app = FastAPI()

    def overlap(q: str, t: str) -> float:
        return float(len(set(q.split()) & set(t.split())))

    @app.post("/v1/rerank")
    async def cohere(request: Request) -> dict[str, Any]:
        body = await request.json()
        got.append(body)
        res = [{"index": i, "relevance_score": overlap(body["query"], d)} for i, d in enumerate(body["documents"])]
        return {"results": sorted(res, key=lambda r: -r["relevance_score"])}

    @app.post("/rerank")
    async def tei(request: Request) -> list[dict[str, Any]]:
        body = await request.json()
        got.append(body)
        return sorted(({"index": i, "score": overlap(body["query"], t)} for i, t in enumerate(body["texts"])),
                      key=lambda r: -r["score"])

    @app.post("/broken/rerank")
    async def broken() -> list[dict[str, Any]]:
        return [{"index": 0, "score": 1.0}]

    return app


def test_http_rerankers_put_scores_back_in_input_order(serve: Any) -> None:
    got: list[dict[str, Any]] = []
    url = serve(rerank_app(got))
    texts = ["volcano ash", "aspirin reduces inflammation", "aspirin"]
    cohere = CohereReranker(url, "rerank-v3", "NO_SUCH_KEY_ENV", 5.0)
    assert cohere.score("aspirin inflammation", texts) == [0.0, 2.0, 1.0]
    assert got[-1] == {"model": "rerank-v3", "query": "aspirin inflammation", "documents": texts, "top_n": 3}
    tei = TEIReranker(url, "", "NO_SUCH_KEY_ENV", 5.0)
    assert tei.score("aspirin inflammation", texts) == [0.0, 2.0, 1.0]
    assert got[-1]["texts"] == texts
    with pytest.raises(QueryError, match="scored 1 of 3"):
        TEIReranker(url + "/broken", "", "NO_SUCH_KEY_ENV", 5.0).score("q", texts)


def test_reranker_outage_keeps_the_fused_order(corpus: Any, dead_url: str) -> None:
    s = corpus.settings.replace(rerank={"backend": "tei", "url": dead_url})
    res = Retriever(s, corpus.stores, corpus.embedder, corpus.extractor).query("aspirin")
    assert res.rerank.status.startswith("error: QueryError") and "kept the fused order" in res.rerank.status
    assert [h.chunk_id for h in res.hits] == [h.chunk_id for h in res.retrieval.hits[: len(res.hits)]]


def test_create_reranker_and_settings() -> None:
    assert create_reranker(RerankSettings()) is None
    assert create_reranker(RerankSettings(backend="cohere", url="http://x")).name == "cohere/"
    with pytest.raises(ConfigError, match="model"):
        RerankSettings(backend="cross-encoder").validate()
