"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama, vLLM, TEI, ...).

One request per ``batch_size`` inputs. 429, 408, 5xx and connection errors are retried with exponential
backoff and full jitter, waiting ``Retry-After`` when the server sends it; other 4xx fail at once. The
dimension is learned from the first response (a one-word probe if ``dim`` is read before any request),
and every vector is L2-normalised here, since not every server normalises.

With ``rate_limit_rpm``/``rate_limit_tpm`` set, each attempt first takes one request and its estimated
tokens from a token bucket (shared through Redis with ``rate_limit_redis``). A 429 never counts against
``max_retries``: it is waited out (``Retry-After``, else backoff) until ``rate_limit_deadline_s``.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Sequence

import httpx
import numpy as np

from ..errors import EmbeddingError
from ..limits.backoff import RetryableError, RetryPolicy, retry_after_of, retry_call, retryable_status
from ..limits.ratelimit import RateLimiter, RateLimitError, create_limiter
from ..settings import EmbedSettings
from .base import TokenizerSpec
from .batching import embed_sorted, l2_normalise

SPECIAL_TOKENS = 2  # the approximate tokenizer leaves the same headroom as a BERT-style model would
CHARS_PER_TOKEN = 4  # the usual estimate for BPE tokenizers on English text
RATE_LIMIT_DEADLINE_S = 900.0  # how long one batch keeps waiting out 429s before it fails


class RateLimited(RetryableError):
    """HTTP 429: retried until the deadline, not counted against ``max_retries``."""


def estimate_tokens(texts: Sequence[str]) -> int:
    return sum(math.ceil(len(t) / CHARS_PER_TOKEN) + SPECIAL_TOKENS for t in texts)


def endpoint_url(base: str) -> str:
    """``.../embeddings`` as given; ``.../v1`` -> ``.../v1/embeddings``; a bare host -> ``/v1/embeddings``."""
    base = base.rstrip("/")
    if base.endswith("/embeddings"):
        return base
    if base.endswith("/v1"):
        return base + "/embeddings"
    return base + "/v1/embeddings"


class HttpEmbedder:
    """Embedder protocol over an OpenAI-style embeddings API. Thread-safe (one pooled ``httpx.Client``)."""

    def __init__(self, settings: EmbedSettings, *, policy: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, limiter: RateLimiter | None = None,
                 rate_limit_deadline_s: float = RATE_LIMIT_DEADLINE_S) -> None:
        self.url = endpoint_url(settings.url)
        self.model = settings.model
        self.batch_size = settings.batch_size or 64  # one request per batch: fewer requests under a rate limit
        self.max_length = settings.max_length
        self.name = f"http/{settings.model}"
        self.policy = policy or RetryPolicy(max_retries=settings.max_retries)
        self.retries = 0  # retries made so far, for metrics and tests
        headers = {"content-type": "application/json"}
        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._client = httpx.Client(headers=headers, timeout=settings.timeout_s, transport=transport)
        self._dim = 0
        self._lock = threading.Lock()
        self.limiter = limiter or create_limiter(settings.rate_limit_rpm, settings.rate_limit_tpm,
                                                 settings.rate_limit_redis, f"fanrag:ratelimit:{self.url}")
        self.rate_limit_deadline_s = rate_limit_deadline_s

    @property
    def dim(self) -> int:
        if not self._dim:
            self.embed_batch(["dimension probe"])
        return self._dim

    def tokenizer_spec(self) -> TokenizerSpec:
        return TokenizerSpec(kind="approx", max_tokens=self.max_length - SPECIAL_TOKENS)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), np.float32)
        try:
            rows = retry_call(lambda: self._patient(list(texts)), self.policy, on_retry=self._count_retry)
        except RetryableError as exc:
            raise EmbeddingError(f"{self.url}: gave up after {self.policy.max_retries + 1} attempts; "
                                 f"last error: {exc.reason}") from exc
        self._learn_dim(rows.shape[1])
        return l2_normalise(rows)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_sorted(self.embed_batch, texts, self.batch_size, dim=self._dim)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]

    def close(self) -> None:
        self._client.close()
        if self.limiter is not None:
            self.limiter.close()

    def _count_retry(self, attempt: int, error: RetryableError, delay: float) -> None:
        with self._lock:
            self.retries += 1

    def _learn_dim(self, dim: int) -> None:
        with self._lock:
            if self._dim and dim != self._dim:
                raise EmbeddingError(f"{self.url}: vectors changed dimension from {self._dim} to {dim}")
            self._dim = dim

    def _patient(self, texts: list[str]) -> np.ndarray:
        """One attempt of ``retry_call``, inside which 429s are waited out until the deadline."""
        deadline = time.monotonic() + self.rate_limit_deadline_s
        for n in itertools.count():
            try:
                return self._request(texts)
            except RateLimited as exc:
                pause = self.policy.delay(min(n, 16), exc.retry_after)
                if time.monotonic() + pause > deadline:
                    raise EmbeddingError(f"{self.url}: still rate limited (HTTP 429) after "
                                         f"{self.rate_limit_deadline_s:.0f} s") from exc
                self._count_retry(n, exc, pause)
                time.sleep(pause)
        raise AssertionError("unreachable: itertools.count() does not end")

    def _request(self, texts: list[str]) -> np.ndarray:
        if self.limiter is not None:
            try:
                self.limiter.acquire(estimate_tokens(texts))
            except RateLimitError as exc:
                raise EmbeddingError(f"{self.url}: {exc}") from exc
        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TransportError as exc:  # connect/read errors and timeouts: the server may come back
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429:
            raise RateLimited("HTTP 429", retry_after_of(response.headers))
        if retryable_status(response.status_code):
            raise RetryableError(f"HTTP {response.status_code}", retry_after_of(response.headers))
        if response.status_code >= 400:
            raise EmbeddingError(f"{self.url}: HTTP {response.status_code}: {response.text[:300]}")
        return _parse(response, len(texts), self.url)


def _parse(response: httpx.Response, expected: int, url: str) -> np.ndarray:
    try:
        data = response.json()["data"]
        # The API allows items in any order; "index" says which input each one is.
        items = sorted(data, key=lambda d: d.get("index", 0))
        rows = np.asarray([d["embedding"] for d in items], dtype=np.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"{url}: response is not an OpenAI embeddings list: {exc}") from exc
    if rows.ndim != 2 or rows.shape[0] != expected:
        raise EmbeddingError(f"{url}: expected {expected} embeddings, got shape {rows.shape}")
    return rows
