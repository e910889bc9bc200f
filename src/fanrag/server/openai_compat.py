"""An OpenAI-compatible chat API over the index, so chat front ends and SDKs work against fanrag unchanged.

    POST /v1/chat/completions   {model, messages, stream?}  (read)
    GET  /v1/models             the one model, "fanrag"      (read)

The question is the last ``user`` message (earlier turns are not used: each question is retrieved and
answered on its own). ``model`` may be any name: it is echoed back, the index and its configured
generator answer. Other OpenAI parameters (temperature, max_tokens, ...) are accepted and ignored: the
generator's come from the settings (``llm.*``).

The answer cites its sources as [n]. They come back twice:

- in the text: the answer, then a blank line, ``Sources:`` and one line per cited source
  (``[n] source, p. 3``), so that a front end that shows only the text still shows them;
- in an extra top-level field, ``fanrag``: ``{"sources": [...], "citations": [...]}``, ``sources`` numbered
  as the prompt numbered them (``n``, ``chunk_id``, ``doc_id``, ``source``, ``page``, ``score``, ``text``),
  ``citations`` mapping each [n] of the answer to its chunk. Streamed, ``sources`` rides on the first chunk
  (before the answer starts) and ``citations`` on the last.

The read token is the bearer token (the ``openai`` client sends its ``api_key`` so). Errors have
OpenAI's shape, ``{"error": {"message", "type", "code"}}`` (``app._error_handlers``); a failure in the
middle of a stream is one ``data: {"error": ...}`` chunk, and the stream ends without ``[DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..retrieve.phases import Done, Sources, Token
from .answers import Phases, failure_line, final, numbered, open_phases
from .sse import data_frame, event_stream
from .state import READS, StateDep

MODEL = "fanrag"
MAX_QUESTION = 4000  # as POST /query


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(max_length=64)
    # a string, or content parts ([{"type": "text", "text": ...}]); other parts (images) are not read
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the other OpenAI parameters are accepted and ignored
    model: str = Field(default=MODEL, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False


def question_of(req: ChatRequest) -> str:
    """The text of the last user message, or HTTPException(422) saying why there is none."""
    for msg in reversed(req.messages):
        if msg.role == "user":
            text = _text(msg.content).strip()
            if not text:
                raise HTTPException(422, "the last user message is empty")
            if len(text) > MAX_QUESTION:
                raise HTTPException(422, f"the question is longer than {MAX_QUESTION} characters")
            return text
    raise HTTPException(422, "no user message: the question is the last message with role 'user'")


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def sources_text(citations: list[dict[str, Any]]) -> str:
    """The cited sources under the answer, one line each: ``[n] source, p. 3``."""
    if not citations:
        return ""
    lines = [f"[{c['n']}] {c['source']}" + (f", p. {c['page']}" if c.get("page") else "") for c in citations]
    return "\n\nSources:\n" + "\n".join(lines)


class _Reply:
    """The envelope every response of one completion shares."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def body(self, obj: str, choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [{"index": 0, **choice}], **extra}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return data_frame(self.body("chat.completion.chunk", {"delta": delta, "finish_reason": finish}, **extra))


router = APIRouter(prefix="/v1", dependencies=READS, tags=["OpenAI-compatible"])


@router.get("/models", summary="The model this server answers as (any name is accepted)")
async def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fanrag"}]}


@router.post("/chat/completions", summary="Answer the last user message from the index, with citations",
             response_model=None, responses={200: {"content": {"text/event-stream": {}}}})
async def chat_completions(req: ChatRequest, st: StateDep) -> Any:
    first, phases = await open_phases(st, question_of(req))
    reply = _Reply(req.model)
    if req.stream:
        return event_stream(_chunks(st, reply, first, phases))
    try:
        result = None
        async for phase in phases:
            if isinstance(phase, Done):
                result = phase.result
    finally:
        await phases.aclose()
    assert result is not None
    d = final(st, result)
    message = {"role": "assistant", "content": d["answer"] + sources_text(d["citations"])}
    extra = {"sources": numbered(first.numbered, st.view), "citations": d["citations"]}
    return reply.body("chat.completion", {"message": message, "finish_reason": "stop"}, fanrag=extra)


async def _chunks(st: StateDep, reply: _Reply, first: Sources, phases: Phases) -> AsyncIterator[bytes]:
    try:
        yield reply.chunk({"role": "assistant", "content": ""},
                          fanrag={"sources": numbered(first.numbered, st.view)})
        async for phase in phases:
            if isinstance(phase, Token):
                yield reply.chunk({"content": phase.text})
            elif isinstance(phase, Done):
                d = final(st, phase.result)
                if tail := sources_text(d["citations"]):
                    yield reply.chunk({"content": tail})
                yield reply.chunk({}, "stop", fanrag={"citations": d["citations"]})
        yield data_frame(b"[DONE]")
    except Exception as exc:  # noqa: BLE001 - the status line is sent: a failure can only be a chunk now
        st.metrics.queries.labels("error").inc()
        yield data_frame({"error": {"message": failure_line(exc, st.view), "type": "server_error", "code": 500}})
    finally:
        await phases.aclose()


ErrorType = Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                    "server_error"]
_TYPES: dict[int, ErrorType] = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def openai_error(status: int, detail: Any) -> dict[str, Any]:
    """An error in OpenAI's shape; ``detail`` (a line, or the list a validation error gives) as text."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": _message(detail), "type": kind, "code": status}}


def _message(detail: Any) -> str:
    if isinstance(detail, list):  # pydantic's errors: "messages.0.role: Field required; ..."
        return "; ".join(_located(e) for e in detail)
    return detail if isinstance(detail, str) else str(detail)


def _located(e: Any) -> str:
    if not isinstance(e, dict):
        return str(e)
    loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
    return f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", ""))

