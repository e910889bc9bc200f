"""The HTTP edge: a request body's size and shape, and a response that always renders.

    BodyLimit         ASGI middleware: 413 for a body over the limit, declared or counted as it streams
    SafeJSONResponse  JSON that renders whatever it holds: a file name that is not UTF-8 (kept
                      surrogate-escaped) shows as ``\\xff``, a lone surrogate as ``\\ud800``, NaN as "nan"
    json_bytes        the same rendering, for a body that is not one response (server-sent events)
    parse_json        a JSON body, or HTTPException(422) with a one-line reason: malformed, not UTF-8,
                      NaN/Infinity, or nested deeper than the parser's recursion allows

Everything here answers bad input with a 4xx and one line; nothing lets a traceback reach the client.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, from Content-Length or counted as it streams."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyLimit._TooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyLimit._TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Any) -> None:
        body = b'{"detail":"request body is larger than server.max_upload_mb (%d MB)"}' % (self.limit >> 20)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that cannot fail on what it holds: a string UTF-8 cannot encode, or a float JSON
    cannot write (NaN, Infinity: pydantic echoes them back in a 422). The first try is the plain one."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (Starlette's JSONResponse format), whatever it holds: the first try
    is the plain one; what UTF-8 or JSON cannot write is written out (``_encodable``)."""
    try:
        return _dumps(value)
    except ValueError:  # UnicodeEncodeError, or "Out of range float values are not JSON compliant"
        return _dumps(_encodable(value))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode written out: escaped bytes (a file name that is not UTF-8)
    as ``\\xff``, any other lone surrogate as ``\\ud800``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body, or HTTPException(422) saying in one line why not. Strict JSON:
    NaN and Infinity, which Python's parser accepts, are refused."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise HTTPException(422, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for a body that is not UTF-8
        raise HTTPException(422, f"invalid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
