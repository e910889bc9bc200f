"""Rerankers score (query, text) pairs in one batched call. Backends: a local sentence-transformers
CrossEncoder, Cohere-style ``POST /v1/rerank`` and TEI-style ``POST /rerank`` HTTP services, or none.

``CachedReranker`` keeps an LRU of scores keyed by (model, query, chunk id) so a repeated query only
scores the candidates it has not seen.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from ..errors import QueryError, require
from ..settings import RerankSettings


@runtime_checkable
class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text (higher is better), in one batched call."""


class CrossEncoderReranker:
    """sentence-transformers CrossEncoder from a local directory or a model id."""

    def __init__(self, model: str, batch_size: int = 32) -> None:
        st = require("sentence_transformers", feature="cross-encoder rerank", extra="st")
        self.name = f"cross-encoder/{model}"
        self.batch_size = batch_size
        self.model = st.CrossEncoder(model, device="cpu")

    @classmethod
    def from_settings(cls, cfg: RerankSettings) -> CrossEncoderReranker:
        return cls(cfg.model, cfg.batch_size)

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        pairs = [(query, t) for t in texts]
        # batch_size covers all candidates (20 by default) so this is one forward pass
        scores = self.model.predict(pairs, batch_size=max(self.batch_size, len(pairs)), show_progress_bar=False)
        return [float(s) for s in scores]


class _HTTPReranker:
    def __init__(self, url: str, model: str, api_key_env: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.model = model
        key = os.environ.get(api_key_env, "")
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {key}"} if key else {})

    @classmethod
    def from_settings(cls, cfg: RerankSettings) -> Self:
        return cls(cfg.url, cfg.model, cfg.api_key_env, cfg.timeout_s)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            resp = self._http.post(self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise QueryError(f"rerank {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise QueryError(f"rerank {self.url}{path}: HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError as exc:
            raise QueryError(f"rerank {self.url}{path}: response is not JSON") from exc


def _scatter(n: int, pairs: list[tuple[int, float]], where: str) -> list[float]:
    """Put ``(index, score)`` results back in input order; every index must be present exactly once."""
    out: list[float | None] = [None] * n
    for i, s in pairs:
        if not 0 <= i < n:
            raise QueryError(f"{where}: index {i} out of range")
        out[i] = float(s)
    if any(s is None for s in out):
        raise QueryError(f"{where}: response scored {sum(s is not None for s in out)} of {n} texts")
    return [float(s) for s in out if s is not None]


class CohereReranker(_HTTPReranker):
    """``POST {url}/v1/rerank {model, query, documents}`` -> ``{results: [{index, relevance_score}]}``."""

    @property
    def name(self) -> str:
        return f"cohere/{self.model}"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        body = {"model": self.model, "query": query, "documents": list(texts), "top_n": len(texts)}
        data = self._post("/v1/rerank", body)
        try:
            pairs = [(int(r["index"]), float(r["relevance_score"])) for r in data["results"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"rerank {self.url}/v1/rerank: unexpected response shape") from exc
        return _scatter(len(texts), pairs, f"rerank {self.url}/v1/rerank")


class TEIReranker(_HTTPReranker):
    """Text Embeddings Inference: ``POST {url}/rerank {query, texts}`` -> ``[{index, score}]``."""

    @property
    def name(self) -> str:
        return f"tei/{self.model or self.url}"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        data = self._post("/rerank", {"query": query, "texts": list(texts), "raw_scores": False})
        try:
            pairs = [(int(r["index"]), float(r["score"])) for r in data]
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"rerank {self.url}/rerank: unexpected response shape") from exc
        return _scatter(len(texts), pairs, f"rerank {self.url}/rerank")


class CachedReranker:
    """An LRU of scores in front of a reranker, keyed by (model, query, chunk id)."""

    def __init__(self, inner: Reranker, size: int = 10_000) -> None:
        self.inner = inner
        self.size = size
        self._cache: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def score_ids(self, query: str, ids: Sequence[str], texts: Sequence[str]) -> tuple[list[float], int]:
        """Scores for the chunks ``ids`` (whose texts are ``texts``); also returns how many came from cache."""
        keys = [(self.inner.name, query, cid) for cid in ids]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            fresh = self.inner.score(query, [texts[i] for i in missing])
            for i, s in zip(missing, fresh, strict=True):
                self._put(keys[i], s)
        scores = []
        for k in keys:
            scores.append(self._cache[k])
            self._cache.move_to_end(k)
        cached = len(keys) - len(missing)
        self.hits += cached
        self.misses += len(missing)
        return scores, cached

    def _put(self, key: tuple[str, str, str], score: float) -> None:
        if self.size <= 0:
            return
        self._cache[key] = score
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
