"""A minimal client for OpenAI-compatible chat endpoints (``POST {url}/chat/completions``), plain and
streamed (server-sent events). Used by the LLM query transformer and the LLM generator.

Synchronous on purpose: the retriever runs it in its thread pool, so one implementation serves both the
sync and the async API. Transport failures become ``QueryError`` naming the endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import QueryError
from ..limits.backoff import RetryableError, RetryPolicy, retry_after_of, retry_call, retryable_status

Message = dict[str, str]


class ChatClient:
    """One endpoint + model. ``url`` is the base URL including ``/v1`` (e.g. ``http://127.0.0.1:8080/v1``)."""

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 1) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        # Few, short retries: a user is waiting. A server's Retry-After is honoured up to 5 s.
        self.policy = RetryPolicy(max_retries=max_retries, base_s=0.25, cap_s=2.0, max_retry_after_s=5.0)
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout_s)

    def _body(self, messages: Sequence[Message], max_tokens: int, temperature: float, stream: bool,
              extra: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model or "default", "messages": list(messages),
                                "max_tokens": max_tokens, "temperature": temperature, "stream": stream}
        body.update(extra or {})
        return body

    def complete(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.0,
                 timeout_s: float | None = None, extra: dict[str, Any] | None = None) -> str:
        """The assistant message's content of one non-streamed completion."""
        body = self._body(messages, max_tokens, temperature, False, extra)
        resp = self._send(lambda: self._http.post(self.url, json=body, timeout=timeout_s or self.timeout_s))
        try:
            return str(resp.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise QueryError(f"llm {self.url}: unexpected response {resp.text[:200]!r}") from exc

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.0,
               timeout_s: float | None = None) -> Iterator[str]:
        """Content deltas as the server sends them (SSE ``data:`` lines, ending with ``[DONE]``). Opening
        the stream is retried like ``complete``; once tokens flow, a failure ends it with ``QueryError``
        (what was yielded cannot be taken back). An error event in the stream is a ``QueryError`` too."""
        body = self._body(messages, max_tokens, temperature, True, None)
        request = self._http.build_request("POST", self.url, json=body, timeout=timeout_s or self.timeout_s)
        resp = self._send(lambda: self._http.send(request, stream=True))
        try:
            for line in resp.iter_lines():
                delta = _sse_delta(line)
                if delta is None:
                    break
                if isinstance(delta, StreamError):
                    raise QueryError(f"llm {self.url}: the server reported an error mid-stream: {delta.message}")
                if delta:
                    yield delta
        except httpx.HTTPError as exc:
            raise QueryError(f"llm {self.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            resp.close()

    def _send(self, call: Callable[[], httpx.Response]) -> httpx.Response:
        """One request with retries on transient failures (connection refused/reset, 429, 5xx)."""

        def attempt() -> httpx.Response:
            try:
                resp = call()
            except httpx.TimeoutException as exc:  # the timeout is the caller's budget: never retried
                raise QueryError(f"llm {self.url}: timed out") from exc
            except httpx.TransportError as exc:
                raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code == 200:
                return resp
            resp.read()  # a streamed response has not read its (error) body yet
            resp.close()
            reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if retryable_status(resp.status_code):
                raise RetryableError(reason, retry_after_of(resp.headers))
            raise QueryError(f"llm {self.url}: {reason}")

        try:
            return retry_call(attempt, self.policy)
        except RetryableError as exc:
            raise QueryError(f"llm {self.url}: {exc.reason}") from exc

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True, slots=True)
class StreamError:
    """An ``error`` object a server sent as a stream event (vLLM and llama.cpp's server do, mid-stream)."""

    message: str


def _sse_delta(line: str) -> str | StreamError | None:
    """The content delta of one SSE line: '' for lines without content, None at ``[DONE]``."""
    if not line.startswith("data:"):
        return ""
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        event = json.loads(data)
    except ValueError:
        return ""
    if isinstance(event, dict) and event.get("error"):
        err = event["error"]
        return StreamError(str(err.get("message", err) if isinstance(err, dict) else err))
    try:
        choice = event["choices"][0]
    except (KeyError, IndexError, TypeError):
        return ""  # e.g. the usage event some servers send last, with no choices
    return str((choice.get("delta") or {}).get("content") or "")
