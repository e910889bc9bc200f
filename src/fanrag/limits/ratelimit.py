"""Token buckets for requests per minute *and* tokens per minute, local or shared through Redis.

Every worker process that calls the same API takes from one bucket: ``RedisTokenBucket`` keeps it in a
Redis hash and updates it in one Lua script (refill by the time elapsed on the Redis clock, then take
both kinds of tokens or none), so no two processes can spend the same token and no process's clock
matters. ``LocalTokenBucket`` is the same arithmetic behind a lock, for one process without Redis.

Sizing: a bucket holds ``burst`` of one period's limit and refills the rest evenly over the period, so
no window of ``period_s`` seconds ever sees more than the limit (capacity + refill = limit), which is
what a provider enforcing a sliding window checks. A request asking for more tokens than the bucket
holds waits for a full bucket and then leaves it in debt, so the long-run rate still holds.

``acquire(tokens)`` blocks until one request and ``tokens`` tokens were taken; ``aacquire`` awaits.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, FanragError, require

MIN_SLEEP_S = 0.001  # never busy-spin on a wait that rounds to zero


class RateLimitError(FanragError):
    """The shared rate limiter could not be reached."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One kind of token: ``per_period`` tokens per ``period_s`` seconds; 0 = unlimited."""

    per_period: float
    period_s: float = 60.0
    burst: float = 1 / 60  # fraction of the period's limit that may go at once (60 s: one second's worth)

    @property
    def capacity(self) -> float:
        return max(self.per_period * self.burst, 1.0)

    @property
    def rate(self) -> float:
        """Tokens per second; with a full bucket at the start, one period never exceeds ``per_period``."""
        return max(self.per_period - self.capacity, 1.0) / self.period_s


@dataclass(frozen=True, slots=True)
class BucketConfig:
    rpm: float
    tpm: float
    period_s: float = 60.0
    burst: float = 1 / 60

    def __post_init__(self) -> None:
        for field, limit in (("embed.rate_limit_rpm", self.rpm), ("embed.rate_limit_tpm", self.tpm)):
            if limit < 0:
                raise ConfigError(field, "must be >= 0 (0 = off)")
        if self.period_s <= 0 or not 0 < self.burst <= 1:  # arguments, not settings: a caller's bug
            raise ValueError(f"period_s must be > 0 and burst in (0, 1]; got {self.period_s}, {self.burst}")

    @property
    def requests(self) -> Limit:
        return Limit(self.rpm, self.period_s, self.burst)

    @property
    def tokens(self) -> Limit:
        return Limit(self.tpm, self.period_s, self.burst)

    def script_args(self, requests: float, tokens: float) -> list[float]:
        """ARGV of the Lua script: rate, capacity and need of each kind (rate 0 = that kind is off)."""
        r, t = self.requests, self.tokens
        return [r.rate if self.rpm else 0.0, r.capacity, requests,
                t.rate if self.tpm else 0.0, t.capacity, tokens, math.ceil(2 * self.period_s * 1000)]


@dataclass(slots=True)
class BucketState:
    requests: float
    tokens: float
    at: float  # seconds, on the clock of whoever keeps the bucket


def refill_and_take(state: BucketState, now: float, args: list[float]) -> float:
    """The bucket step (mirrored by ``TAKE_SCRIPT``): refill for ``now - state.at``, then take both kinds
    of tokens and return 0.0, or take nothing and return the seconds until both would be there."""
    rate_r, cap_r, need_r, rate_t, cap_t, need_t = args[:6]
    elapsed = max(now - state.at, 0.0)
    state.requests = min(cap_r, state.requests + elapsed * rate_r)
    state.tokens = min(cap_t, state.tokens + elapsed * rate_t)
    state.at = max(now, state.at)
    wait = max(_wait(state.requests, rate_r, cap_r, need_r), _wait(state.tokens, rate_t, cap_t, need_t))
    if wait <= 0:
        state.requests -= need_r if rate_r > 0 else 0.0
        state.tokens -= need_t if rate_t > 0 else 0.0
    return wait


def _wait(level: float, rate: float, capacity: float, need: float) -> float:
    if rate <= 0:
        return 0.0
    short = min(need, capacity) - level  # more than a full bucket: wait for a full one, then go into debt
    return short / rate if short > 0 else 0.0


# KEYS[1]: the bucket's hash (fields r, t, ts). ARGV: as BucketConfig.script_args. Returns the wait in
# seconds as a string (a Lua number would be truncated to an integer on its way back).
TAKE_SCRIPT = """
local rate_r, cap_r, need_r = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rate_t, cap_t, need_t = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(s[1]) or cap_r
local t = tonumber(s[2]) or cap_t
local ts = tonumber(s[3]) or now
local elapsed = math.max(now - ts, 0)
r = math.min(cap_r, r + elapsed * rate_r)
t = math.min(cap_t, t + elapsed * rate_t)
local function wait(level, rate, cap, need)
  if rate <= 0 then return 0 end
  local short = math.min(need, cap) - level
  if short > 0 then return short / rate end
  return 0
end
local w = math.max(wait(r, rate_r, cap_r, need_r), wait(t, rate_t, cap_t, need_t))
if w <= 0 then
  if rate_r > 0 then r = r - need_r end
  if rate_t > 0 then t = t - need_t end
end
redis.call('HSET', KEYS[1], 'r', string.format('%.6f', r), 't', string.format('%.6f', t),
           'ts', string.format('%.6f', math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return string.format('%.6f', w)
"""


@runtime_checkable
class RateLimiter(Protocol):
    def try_acquire(self, tokens: int = 0, requests: int = 1) -> float:
        """Take ``requests`` and ``tokens`` and return 0.0, or take nothing and return the wait in seconds."""

    def acquire(self, tokens: int = 0, requests: int = 1) -> None: ...

    async def aacquire(self, tokens: int = 0, requests: int = 1) -> None: ...

    def close(self) -> None: ...


class _Bucket(ABC):
    """The blocking loops; subclasses implement ``try_acquire``."""

    @abstractmethod
    def try_acquire(self, tokens: int = 0, requests: int = 1) -> float:
        """Take ``requests`` and ``tokens`` and return 0.0, or take nothing and return the wait in seconds."""

    def acquire(self, tokens: int = 0, requests: int = 1) -> None:
        while (wait := self.try_acquire(tokens, requests)) > 0:
            time.sleep(max(wait, MIN_SLEEP_S))

    async def aacquire(self, tokens: int = 0, requests: int = 1) -> None:
        while (wait := await asyncio.to_thread(self.try_acquire, tokens, requests)) > 0:
            await asyncio.sleep(max(wait, MIN_SLEEP_S))

    def close(self) -> None:
        """Nothing held by default."""


class LocalTokenBucket(_Bucket):
    """In-process bucket (thread-safe); each process has its own, so limits add up across processes."""

    def __init__(self, rpm: float, tpm: float = 0, *, period_s: float = 60.0, burst: float = 1 / 60) -> None:
        self.config = BucketConfig(rpm, tpm, period_s, burst)
        self._state = BucketState(self.config.requests.capacity, self.config.tokens.capacity, time.monotonic())
        self._lock = threading.Lock()

    def try_acquire(self, tokens: int = 0, requests: int = 1) -> float:
        args = self.config.script_args(requests, tokens)
        with self._lock:
            return refill_and_take(self._state, time.monotonic(), args)


class RedisTokenBucket(_Bucket):
    """Bucket in Redis under ``key``, shared by every process that uses the same URL and key."""

    def __init__(self, url: str, key: str, rpm: float, tpm: float = 0, *, period_s: float = 60.0,
                 burst: float = 1 / 60) -> None:
        redis = require("redis", feature="the shared Redis rate limiter", extra="redis")
        self.config = BucketConfig(rpm, tpm, period_s, burst)
        self.key = key
        self.url = url
        self._redis: Any = redis.Redis.from_url(url)
        self._script: Any = self._redis.register_script(TAKE_SCRIPT)  # EVALSHA, reloading on NOSCRIPT

    def try_acquire(self, tokens: int = 0, requests: int = 1) -> float:
        from redis.exceptions import RedisError

        try:
            out = self._script(keys=[self.key], args=self.config.script_args(requests, tokens))
        except RedisError as exc:
            raise RateLimitError(f"rate limiter at {self.url}: {type(exc).__name__}: {exc}") from exc
        return float(out)

    def close(self) -> None:
        self._redis.close()


def create_limiter(rpm: int, tpm: int, redis_url: str = "", key: str = "fanrag:ratelimit") -> RateLimiter | None:
    """The limiter the settings ask for: None when both limits are 0, Redis-backed when a URL is given."""
    if rpm <= 0 and tpm <= 0:
        return None
    if redis_url:
        return RedisTokenBucket(redis_url, key, rpm, tpm)
    return LocalTokenBucket(rpm, tpm)
