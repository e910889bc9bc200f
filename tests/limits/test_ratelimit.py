"""Token buckets: the bucket arithmetic, the Lua script on a real Redis, and four worker processes that
share one Redis bucket against a loopback embeddings server that enforces a sliding-window limit."""

from __future__ import annotations

import asyncio
import collections
import math
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fanrag.embed.http import HttpEmbedder
from fanrag.errors import ConfigError, EmbeddingError
from fanrag.limits.backoff import RetryPolicy
from fanrag.limits.ratelimit import (
    BucketConfig,
    BucketState,
    LocalTokenBucket,
    RateLimiter,
    RedisTokenBucket,
    create_limiter,
    refill_and_take,
)
from fanrag.settings import EmbedSettings
from tests.jsonhttp import JsonHandler
from tests.servers.redis import redis_server  # noqa: F401 - the session fixture


@pytest.fixture
def redis_url(redis_server: str) -> str:  # noqa: F811
    pytest.importorskip("redis", reason="the shared limiter needs: pip install redis")
    return redis_server

# --- the bucket step, on a clock the test controls ------------------------------------------------------


def test_full_bucket_allows_a_burst_then_waits_for_refill() -> None:
    config = BucketConfig(rpm=60, tpm=0, period_s=60.0, burst=5 / 60)  # 5 at once, then 55/60 per second
    state = BucketState(config.requests.capacity, 0.0, at=100.0)
    args = config.script_args(1, 0)
    assert [refill_and_take(state, 100.0, args) for _ in range(5)] == [0.0] * 5
    wait = refill_and_take(state, 100.0, args)
    assert wait == pytest.approx(60 / 55)
    assert refill_and_take(state, 100.0 + wait / 2, args) == pytest.approx(wait / 2)
    assert refill_and_take(state, 100.0 + wait, args) == 0.0
    assert refill_and_take(state, 10_000.0, args) == 0.0  # a long pause refills only up to capacity
    assert state.requests == pytest.approx(4.0)


def test_takes_both_kinds_or_neither() -> None:
    config = BucketConfig(rpm=600, tpm=6000, period_s=60.0, burst=0.5)  # capacity 300 requests, 3000 tokens
    state = BucketState(300.0, 3000.0, at=0.0)
    assert refill_and_take(state, 0.0, config.script_args(1, 2500)) == 0.0
    wait = refill_and_take(state, 0.0, config.script_args(1, 1000))  # 500 tokens left: not enough
    assert wait == pytest.approx(500 / config.tokens.rate)
    assert state.requests == 299.0 and state.tokens == 500.0  # the request was not taken either
    assert refill_and_take(state, 0.0, config.script_args(1, 400)) == 0.0


def test_a_request_larger_than_the_bucket_waits_for_a_full_one_then_owes() -> None:
    config = BucketConfig(rpm=0, tpm=600, period_s=60.0, burst=0.1)  # capacity 60 tokens, 9 per second
    state = BucketState(0.0, 30.0, at=0.0)
    assert refill_and_take(state, 0.0, config.script_args(1, 200)) == pytest.approx(30 / 9)
    assert refill_and_take(state, 30 / 9, config.script_args(1, 200)) == 0.0
    assert state.tokens == pytest.approx(-140.0)
    assert state.requests == 0.0  # rpm = 0: requests are not limited, nor counted


def test_config_is_checked_and_zero_limits_mean_no_limiter() -> None:
    with pytest.raises(ConfigError):
        BucketConfig(rpm=-1, tpm=0)
    assert create_limiter(0, 0) is None
    assert isinstance(create_limiter(60, 0), LocalTokenBucket)
    with pytest.raises(ConfigError, match="rate_limit_rpm"):
        EmbedSettings(rate_limit_rpm=-5).validate()


def test_local_bucket_blocks_until_its_tokens_are_there() -> None:
    bucket = LocalTokenBucket(rpm=6000, tpm=0, period_s=60.0, burst=2 / 6000)  # 2 at once, ~100 per second
    assert isinstance(bucket, RateLimiter)
    taken = [bucket.try_acquire() for _ in range(2)]
    assert taken == [0.0, 0.0] and bucket.try_acquire() > 0
    bucket.acquire()  # sleeps the wait instead of returning it
    assert bucket.try_acquire() > 0
    asyncio.run(bucket.aacquire())  # awaits it
    assert bucket.try_acquire() > 0


# --- the Lua script on a real Redis ---------------------------------------------------------------------


def _redis_bucket(url: str, **kw: float) -> RedisTokenBucket:
    return RedisTokenBucket(url, f"test:bucket:{uuid.uuid4().hex}", **kw)  # type: ignore[arg-type]


def _age(bucket: RedisTokenBucket, seconds: float) -> None:
    """Move the bucket's last refill back in time: the same as waiting, without sleeping."""
    ts = float(bucket._redis.hget(bucket.key, "ts"))
    bucket._redis.hset(bucket.key, "ts", f"{ts - seconds:.6f}")


def test_lua_bucket_bursts_then_refills_by_elapsed_time(redis_url: str) -> None:
    bucket = _redis_bucket(redis_url, rpm=60, tpm=0, burst=5 / 60)  # 5 at once, 55 per minute after
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5
    wait = bucket.try_acquire()
    assert 0 < wait <= 60 / 55  # time passes between calls: the wait can only be shorter
    _age(bucket, 60 / 55)
    assert bucket.try_acquire() == 0.0
    _age(bucket, 3600)
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5  # refilled to capacity, not beyond
    assert bucket.try_acquire() > 0
    assert bucket._redis.pttl(bucket.key) > 0  # an idle bucket expires
    bucket.close()


def test_lua_bucket_takes_both_kinds_or_neither(redis_url: str) -> None:
    bucket = _redis_bucket(redis_url, rpm=600, tpm=6000, burst=0.5)  # 300 requests, 3000 tokens
    assert bucket.try_acquire(tokens=2500) == 0.0
    wait = bucket.try_acquire(tokens=1000)
    assert 0 < wait <= 500 / bucket.config.tokens.rate
    state = bucket._redis.hgetall(bucket.key)
    assert float(state[b"r"]) == pytest.approx(299.0, abs=0.1)  # the refused call took no request
    assert bucket.try_acquire(tokens=400) == 0.0
    bucket.close()


def test_lua_bucket_is_shared_by_every_client_of_the_key(redis_url: str) -> None:
    first = _redis_bucket(redis_url, rpm=60, tpm=0, burst=3 / 60)
    second = RedisTokenBucket(redis_url, first.key, rpm=60, tpm=0, burst=3 / 60)
    first._redis.script_flush()  # EVALSHA of an unknown script: the client loads it again
    assert [first.try_acquire(), second.try_acquire(), first.try_acquire()] == [0.0] * 3
    assert second.try_acquire() > 0 and first.try_acquire() > 0
    first.close()
    second.close()


def test_settings_give_the_embedder_a_shared_bucket_per_endpoint(redis_url: str) -> None:
    settings = EmbedSettings(backend="http", url="http://127.0.0.1:1/v1", rate_limit_rpm=120,
                             rate_limit_tpm=50_000, rate_limit_redis=redis_url)
    embedder = HttpEmbedder(settings)
    assert isinstance(embedder.limiter, RedisTokenBucket)
    assert embedder.limiter.key == "fanrag:ratelimit:http://127.0.0.1:1/v1/embeddings"
    assert (embedder.limiter.config.rpm, embedder.limiter.config.tpm) == (120, 50_000)
    embedder.close()
    assert HttpEmbedder(EmbedSettings(backend="http", url="http://h/v1")).limiter is None


def test_unreachable_redis_is_an_embedding_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedder = HttpEmbedder(EmbedSettings(backend="http", url="http://127.0.0.1:1", rate_limit_rpm=60,
                                          rate_limit_redis=f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(EmbeddingError, match="rate limiter"):
        embedder.embed(["x"])
    embedder.close()


# --- four processes, one bucket, one server that enforces the limit -------------------------------------


def raw_vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(c in "aeiou" for c in text)), float(ord(text[0])), 2.0]


@dataclass
class Window:
    """The server's limit: at most ``limit`` accepted requests in any ``seconds``-long window."""

    limit: int
    seconds: float
    accepted: collections.deque[float] = field(default_factory=collections.deque)
    arrivals: list[float] = field(default_factory=list)
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self) -> float | None:
        """None if accepted, else the Retry-After in seconds."""
        with self.lock:
            now = time.monotonic()
            self.arrivals.append(now)
            while self.accepted and self.accepted[0] <= now - self.seconds:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.rejected += 1
                return self.accepted[0] + self.seconds - now if self.accepted else self.seconds
            self.accepted.append(now)
            return None


def _handler(window: Window) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            retry_after = window.admit()
            if retry_after is not None:
                self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": f"{retry_after:.3f}"})
                return
            data = [{"index": i, "embedding": raw_vector(t)} for i, t in enumerate(body["input"])]
            self._send(200, {"object": "list", "data": data, "model": body["model"]})

    return Handler


def _serve(window: Window) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(window))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def strict_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Window]]:
    window = Window(*request.param)
    for url in _serve(window):
        yield url, window


def _embed_in_worker(url: str, texts: list[str], bucket: tuple[str, str, int, float] | None) -> np.ndarray:
    """One worker process: embed ``texts`` two at a time, optionally through the shared Redis bucket."""
    limiter = None
    if bucket is not None:
        redis_url, key, per_period, period_s = bucket
        limiter = RedisTokenBucket(redis_url, key, per_period, 0, period_s=period_s)
    settings = EmbedSettings(backend="http", url=url, model="m", batch_size=2)
    embedder = HttpEmbedder(settings, policy=RetryPolicy(max_retries=0, base_s=0.05, cap_s=0.5), limiter=limiter)
    try:
        return embedder.embed(texts)
    finally:
        embedder.close()


def _texts(worker: int, n: int) -> list[str]:
    return [f"worker {worker} text {i} " + "abc" * (i % 5) for i in range(n)]


def _run_workers(url: str, per_worker: int, bucket: tuple[str, str, int, float] | None) -> None:
    spawn = multiprocessing.get_context("spawn")  # the server thread lives in this process: no fork
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        futures = [pool.submit(_embed_in_worker, url, _texts(w, per_worker), bucket) for w in range(4)]
        results = [f.result() for f in futures]  # a failed job raises here
    for w, vectors in enumerate(results):
        expected = np.array([raw_vector(t) for t in _texts(w, per_worker)], np.float32)
        np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strict_server", [(20, 2.0)], indirect=True)  # 20 per 2 s = 600 requests/min
def test_workers_sharing_a_redis_bucket_stay_under_the_servers_limit(
        strict_server: tuple[str, Window], redis_url: str) -> None:
    url, window = strict_server
    bucket = (redis_url, f"test:embed:{uuid.uuid4().hex}", window.limit, window.seconds)
    _run_workers(url, per_worker=40, bucket=bucket)  # 4 x 20 requests
    arrivals = window.arrivals
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60
    limit = window.limit / window.seconds * 60
    print(f"\nshared Redis bucket: {len(arrivals)} requests in {arrivals[-1] - arrivals[0]:.2f} s = "
          f"{rate:.0f}/min (server limit {limit:.0f}/min); 429s: {window.rejected}")
    assert len(arrivals) - window.rejected == 4 * 20
    assert rate <= limit


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strict_server", [(5, 1.0)], indirect=True)
def test_429s_are_waited_out_and_never_fail_a_job(strict_server: tuple[str, Window]) -> None:
    url, window = strict_server
    _run_workers(url, per_worker=10, bucket=None)  # no limiter: 20 requests against 5 per second
    print(f"\nno limiter: {len(window.arrivals)} requests, {window.rejected} answered 429 (max_retries=0)")
    assert window.rejected > 0
    assert len(window.arrivals) - window.rejected == 4 * 5


def test_a_429_past_the_deadline_fails_with_a_clear_error() -> None:
    window = Window(limit=0, seconds=60.0)  # always 429, Retry-After ~60 s
    for url in _serve(window):
        embedder = HttpEmbedder(EmbedSettings(backend="http", url=url, model="m"),
                                policy=RetryPolicy(max_retries=0), rate_limit_deadline_s=1.0)
        with pytest.raises(EmbeddingError, match="still rate limited"):
            embedder.embed(["x"])
        embedder.close()
    assert window.rejected == 1


def test_rate_of_the_local_bucket_math_matches_the_limit() -> None:
    config = BucketConfig(rpm=120, tpm=0)
    # capacity + one period of refill = the limit: no 60 s window holds more than rpm requests
    assert math.isclose(config.requests.capacity + config.requests.rate * 60, 120)
