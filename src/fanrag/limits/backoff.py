"""Retries with exponential backoff and full jitter, honouring ``Retry-After``.

Full jitter (sleep a uniform random time in ``[0, min(cap, base * 2**attempt)]``) spreads the retries of
many clients that failed together, instead of having them all return at the same instant. When the server
says how long to wait (``Retry-After`` on 429/503), that wins, up to ``max_retry_after_s``.

The loop is synchronous; an async client can reuse ``RetryPolicy.delay`` and ``retryable_status`` with
``asyncio.sleep`` around its own call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")


class RetryableError(Exception):
    """Raised by one attempt to ask for another; ``retry_after`` is the server's wait in seconds, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5  # attempts = max_retries + 1
    base_s: float = 0.5
    cap_s: float = 20.0
    max_retry_after_s: float = 60.0  # a server asking for longer than this is waited this long

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to sleep before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return rng(0.0, min(self.cap_s, self.base_s * 2.0 ** attempt))


def retryable_status(status: int) -> bool:
    """429 and 408 (try later), and server errors except 501 (not implemented: retrying will not help)."""
    return status in (408, 429) or (status >= 500 and status != 501)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; parsedate gives naive datetimes for "-0000"
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` of a response's headers (case-insensitive mapping, e.g. ``httpx.Headers``)."""
    return parse_retry_after(headers.get("retry-after"))


def retry_call(attempt: Callable[[], T], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep,
               on_retry: Callable[[int, RetryableError, float], None] | None = None) -> T:
    """Call ``attempt`` until it returns, retrying each ``RetryableError`` up to ``policy.max_retries`` times.

    The last ``RetryableError`` propagates when retries run out; other exceptions propagate at once.
    ``on_retry(attempt, error, delay)`` is called before each sleep (logging, metrics).
    """
    for n in range(policy.max_retries + 1):
        try:
            return attempt()
        except RetryableError as exc:
            if n == policy.max_retries:
                raise
            pause = policy.delay(n, exc.retry_after)
            if on_retry is not None:
                on_retry(n, exc, pause)
            sleep(pause)
    raise AssertionError("unreachable: the loop returns or raises")
