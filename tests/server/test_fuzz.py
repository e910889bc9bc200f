"""A schemathesis run over the server's own /openapi.json, against a real ``fanrag serve`` (issue 13):
whatever it sends, valid or not (positive and negative generation), with the write token or without any,
the answer is never a 5xx.

Slow (``-m slow``): a bounded number of examples per operation and mode; hypothesis shrinks a failure to
the smallest request that reproduces it, and schemathesis prints it as a curl command. (schemathesis's own
pytest integration, ``from_fixture``, does not run under pytest 9, so each operation's strategy is driven
by hypothesis here.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow

EXAMPLES = 100  # per operation, positive and negative together
ENDLESS = {"GET /events/ingest"}  # a stream that never ends: its one input, the token, is tested elsewhere


def fuzz(url: str, headers: dict[str, str] | None) -> list[str]:
    """Every operation of the schema at ``url``; the operations that were fuzzed."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in ENDLESS:
            continue
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(case=cases)
        def call(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=120)

        call()
        fuzzed.append(operation.label)
    return fuzzed


@pytest.mark.timeout(1800)
def test_no_request_with_the_token_is_a_server_error(server: Any) -> None:
    # documents to find, list and delete first; the root's symlink out is refused, not read
    r = httpx.post(server.url + "/ingest", json={"paths": [""]}, headers=server.auth, timeout=300)
    assert r.status_code == 200 and r.json()["ok"] == 3, r.text
    assert len(fuzz(server.url, server.auth)) == 9


@pytest.mark.timeout(1800)
def test_no_anonymous_request_is_a_server_error(server: Any) -> None:
    assert len(fuzz(server.url, None)) == 9
