from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from fanrag.limits.backoff import (
    RetryableError,
    RetryPolicy,
    parse_retry_after,
    retry_after_of,
    retry_call,
    retryable_status,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0


def test_retry_after_as_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=42), usegmt=True)  # "Fri, 02 Jan 2026 03:04:47 GMT"
    assert parse_retry_after(later, now=NOW) == pytest.approx(42.0)
    earlier = format_datetime(NOW - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Fri, 99 Foo 2026"])
def test_missing_or_unparseable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_of_reads_headers_case_insensitively() -> None:
    import httpx

    assert retry_after_of(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after_of(httpx.Headers({})) is None


def test_full_jitter_bounds_grow_then_cap() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0)
    upper = [policy.delay(n, rng=lambda lo, hi: hi) for n in range(6)]
    assert upper == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert all(policy.delay(n, rng=lambda lo, hi: lo) == 0.0 for n in range(6))


def test_server_wait_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_retry_after_s=10.0)
    assert policy.delay(0, retry_after=4.0) == 4.0
    assert policy.delay(0, retry_after=500.0) == 10.0


@pytest.mark.parametrize(("status", "expected"), [(200, False), (400, False), (404, False), (408, True),
                                                  (429, True), (500, True), (501, False), (503, True)])
def test_retryable_status(status: int, expected: bool) -> None:
    assert retryable_status(status) is expected


def test_retry_call_retries_then_returns() -> None:
    outcomes = [RetryableError("busy", retry_after=2.0), RetryableError("boom"), "ok"]
    slept: list[float] = []
    seen: list[int] = []

    def attempt() -> str:
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    policy = RetryPolicy(max_retries=3, base_s=1.0, cap_s=1.0)
    assert retry_call(attempt, policy, sleep=slept.append, on_retry=lambda n, e, d: seen.append(n)) == "ok"
    assert slept[0] == 2.0 and 0.0 <= slept[1] <= 2.0  # Retry-After honoured, then jittered backoff
    assert seen == [0, 1]


def test_retry_call_gives_up_with_the_last_error() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise RetryableError(f"fail {len(calls)}")

    with pytest.raises(RetryableError, match="fail 3"):
        retry_call(attempt, RetryPolicy(max_retries=2), sleep=lambda s: None)
    assert len(calls) == 3


def test_other_errors_are_not_retried() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise KeyError("bad request")

    with pytest.raises(KeyError):
        retry_call(attempt, RetryPolicy(max_retries=5), sleep=lambda s: None)
    assert len(calls) == 1
