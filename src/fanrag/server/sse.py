"""Server-sent events: the frames and the response that carries them.

    frame("token", {"text": "Hel"})  ->  b'event: token\ndata: {"text":"Hel"}\n\n'
    data_frame({...})                ->  b'data: {...}\n\n'   (no event name: the OpenAI wire format)

A payload is one line of JSON (``json_bytes``: JSON escapes every newline, and renders whatever a
name holds), so a frame never needs ``data:`` continuation lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from .http import json_bytes

# no-transform and X-Accel-Buffering: a proxy that buffers or compresses would hold the tokens back
HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"  # a comment line: readers ignore it, idle proxies see traffic


def frame(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"


def data_frame(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json_bytes(data)) + b"\n\n"


def event_stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=HEADERS)
