"""The HTTP API: ``create_app(settings) -> FastAPI``.

    POST   /query              {query, top_n?, branches?, generate?, stream?, filter?, collection?} -> QueryResult,
                               or with stream: server-sent events (answers.py)                      (read)
    POST   /ingest             multipart upload, or JSON {paths: [...]} under server.ingest_root   (token)
    GET    /documents          committed documents (filter by status; paged)                       (read)
    GET    /documents/{id}     one document and a window of its chunks (the UI's citation view)     (read)
    DELETE /documents/{id}                                                                       (token)
    GET    /events/ingest      the server's ingest runs as they happen, server-sent events          (read)
    POST   /v1/chat/completions, GET /v1/models   OpenAI-compatible (openai_compat.py)             (read)
    GET    /                   the web UI (static files, ui.py): no data in it, open like /docs
    GET    /healthz, /metrics  (Prometheus text; read), /docs and /openapi.json

Write endpoints need ``Authorization: Bearer <server.token>``; with no token configured they are off
(403) and the index is opened read-only, so ``fanrag ingest`` can keep writing to it. Read endpoints need
``server.read_token`` (or the write token) when one is set, and are open otherwise. Request bodies
larger than ``server.max_upload_mb`` get 413, whether or not they declare a Content-Length.

The boundary maps every bad input to a 4xx with a one-line reason (``http``: body size and JSON,
``files``: names and the ingest root); the read API names sources relative to the ingest root, never
by absolute server path. docs/security.md states the model.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ..errors import ConfigError, FanragError, MissingExtraError, QueryError
from ..filters import Filter, as_filter, rebase
from ..filters.model import both, in_collections
from ..ids import source_uri
from ..settings import Settings
from ..types import BranchName

try:
    from fastapi import FastAPI, HTTPException, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the HTTP server", "server", exc.name) from exc

from . import ui
from .answers import open_phases, query_events
from .files import IngestPaths, SourceView, confined_paths, save_uploads
from .http import BodyLimit, SafeJSONResponse, parse_json
from .ingest_events import IngestMonitor
from .metrics import Metrics
from .openai_compat import openai_error
from .openai_compat import router as openai_router
from .sse import KEEPALIVE, event_stream, frame
from .state import READS, WRITES, AppState, StateDep

if TYPE_CHECKING:
    from ..engine import Engine
    from ..ingest.sources import PathSource

MAX_OFFSET = 2**63 - 1  # the SQL stores' bigint: a larger OFFSET is a 422, not an overflow
DocId = Annotated[str, Path(max_length=128, pattern=r"^[\w.:-]+$")]


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)  # a lone surrogate is refused here (string_unicode)
    top_n: int | None = Field(default=None, ge=1, le=100,
                              description="chunks kept for the answer; at most retrieval.candidates")
    branches: list[BranchName] | None = None
    generate: bool = True
    stream: bool = Field(default=False, description="answer as server-sent events: sources, tokens, timings, "
                                                    "done (or error)")
    filter: dict[str, Any] | str | None = Field(
        default=None, description="search only the documents this matches (fanrag.filters): a JSON object "
                                  "such as {\"year\": {\"gte\": 2020}, \"source\": {\"glob\": \"**/*.md\"}} "
                                  "or the string form 'year >= 2020 and source:**/*.md'; malformed: 400")
    collection: list[Annotated[str, Field(pattern=r"^[\w.-]{1,128}$")]] | None = Field(
        default=None, min_length=1, max_length=100,
        description="search these collections only (fanrag ingest --collection); 'default' holds the documents "
                    "ingested without one")


def open_engine(settings: Settings) -> Engine:
    """The index the app serves. Without a token nothing can be written through the API, so it takes no
    writer lock; with one it is the writer (IndexLocked if another process writes to the home)."""
    from ..engine import Engine

    return Engine.open(settings=settings, mode="write" if settings.server.token else "read")


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The API over ``settings.home``. Without ``engine`` the index opens when the app starts (lifespan)
    and closes with it; ``fanrag serve`` opens it first (a locked home is one line, not a traceback) and
    closes it itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = engine if engine is not None else await asyncio.to_thread(open_engine, settings)
        view = SourceView(settings)
        app.state.fanrag = AppState(settings, opened, Metrics(), view, asyncio.Lock(), IngestMonitor(view))
        try:
            yield
        finally:
            if opened is not engine:  # the app opened it: the app closes it
                opened.close()

    app = FastAPI(title="fanrag", version="0.1.0", lifespan=lifespan, default_response_class=SafeJSONResponse,
                  description="Retrieval-augmented generation, parallel by design.")
    app.add_middleware(BodyLimit, limit=settings.server.max_upload_mb << 20)
    _error_handlers(app)
    app.include_router(openai_router)
    app.include_router(ui.router)
    ui.mount(app)
    reads, writes = READS, WRITES

    @app.post("/query", summary="Answer a question with cited sources", dependencies=reads, response_model=None,
              responses={200: {"content": {"text/event-stream": {}}}})
    async def query(req: QueryRequest, st: StateDep) -> Any:
        candidates = st.settings.retrieval.candidates
        if req.top_n is not None and req.top_n > candidates:  # the retriever ranks no more than that
            raise HTTPException(422, f"top_n {req.top_n} is above retrieval.candidates ({candidates}), the "
                                     "most chunks a query ranks")
        flt = both(in_collections(tuple(req.collection)) if req.collection else None,
                   request_filter(req.filter, st.settings))
        if req.stream:
            first, phases = await open_phases(st, req.query, branches=req.branches, top_n=req.top_n,
                                              generate=req.generate, filter=flt)
            return event_stream(query_events(st, first, phases))
        try:
            result = await st.engine.aquery(req.query, branches=req.branches, top_n=req.top_n,
                                               generate=req.generate, filter=flt)
        except FanragError:
            st.metrics.queries.labels("error").inc()
            raise
        st.metrics.observe_query(result)
        return st.view.query(result.to_dict())

    @app.post("/ingest", summary="Ingest uploaded files or server-side paths", dependencies=writes,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": IngestPaths.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                      "metadata": {"type": "string", "description": "a JSON object of tags for the uploaded "
                                   "documents, e.g. {\"team\": \"red\", \"year\": 2024}"}}}}}}})
    async def ingest(request: Request, st: StateDep) -> dict[str, Any]:
        source, tags = await _ingest_source(request, st.settings)  # validated, deduplicated before the lock
        with st.ingests.run(_label(source, st.view)) as progress:
            async with st.write_lock:
                progress.start()
                summary = source.report(await st.engine.aingest(source, progress=progress)).to_dict()
                if tags:  # an upload's metadata: on its documents, committed now or found unchanged
                    uris = [source_uri(p) for p in source.paths]
                    summary["tagged"] = await asyncio.to_thread(st.engine.stores.meta.tag_documents, uris, tags)
            progress.finish(summary)
        st.metrics.observe_ingest(summary)
        return summary

    @app.get("/documents", summary="List documents", dependencies=reads)
    async def documents(st: StateDep,
                        status: Literal["committed", "pending", "failed"] | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        recs = await asyncio.to_thread(st.engine.stores.meta.documents, status, None, limit, offset)
        return {"documents": [st.view.document(asdict(r)) for r in recs], "limit": limit, "offset": offset}

    @app.get("/documents/{doc_id}", summary="A document and a window of its committed chunks", dependencies=reads)
    async def document(doc_id: DocId, st: StateDep,
                       around: Annotated[str | None, Query(max_length=200, description="a chunk id: the window "
                                                           "is centred on it")] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                       offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        found = await asyncio.to_thread(_chunk_window, st, doc_id, around, limit, offset)
        if found is None:
            raise HTTPException(404, f"no document {doc_id!r}" if around is None else
                                f"no chunk {around!r} in document {doc_id!r}")
        return found

    @app.get("/events/ingest", summary="Ingest runs as they happen (server-sent events: state)",
             dependencies=reads, response_class=Response,
             responses={200: {"content": {"text/event-stream": {}}, "description": "event: state, repeated"}})
    async def ingest_events(st: StateDep) -> Response:
        async def frames() -> AsyncIterator[bytes]:
            async for state in st.ingests.states():
                yield KEEPALIVE if state is None else frame("state", state)

        return event_stream(frames())

    @app.delete("/documents/{doc_id}", summary="Delete a document everywhere", dependencies=writes)
    async def delete_document(doc_id: DocId, st: StateDep) -> dict[str, Any]:
        if await asyncio.to_thread(st.engine.stores.meta.get_document, doc_id) is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        async with st.write_lock:
            n = await asyncio.to_thread(st.engine.delete_documents, [doc_id])
        return {"doc_id": doc_id, "deleted": n}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "writes": bool(settings.server.token)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=reads)
    async def metrics(st: StateDep) -> Response:
        body, ctype = st.metrics.render()
        return Response(body, media_type=ctype)

    return app


def request_filter(value: dict[str, Any] | str | None, settings: Settings) -> Filter | None:
    """A request's filter (a malformed one is a FilterError: 400). Its relative source paths are taken
    from the ingest root, as the read API names sources (with no root, one matches at any depth)."""
    flt = as_filter(value)
    if flt is None:
        return None
    root = settings.server.ingest_root
    return rebase(flt, os.path.realpath(root) if root else "**")


def _error_handlers(app: FastAPI) -> None:
    """Errors become a status and one line: the library's own by kind, validation errors as 422 (even
    when the input they echo cannot be encoded), anything else as a bare 500 (the traceback is logged)."""

    @app.exception_handler(FanragError)
    async def fanrag_error(request: Request, exc: FanragError) -> SafeJSONResponse:
        status = 400 if isinstance(exc, QueryError | ConfigError) else 500
        return _error(request, status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return _error(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
        return _error(request, 422, _errors(exc.errors()))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> SafeJSONResponse:
        return _error(request, 500, f"internal error: {type(exc).__name__} (see the server log)")


def _error(request: Request, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> SafeJSONResponse:
    """``{"detail": ...}``; under /v1/ OpenAI's ``{"error": {...}}``, which its clients and SDKs read."""
    body = openai_error(status, detail) if request.url.path.startswith("/v1/") else {"detail": detail}
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's errors as JSON: what it echoes (``input``, ``ctx``) may be any object; keep it as text."""
    return [{k: (v if k not in ("input", "ctx") else _jsonable(v)) for k, v in e.items() if k != "url"}
            for e in errors]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


async def _ingest_source(request: Request, settings: Settings) -> tuple[PathSource, dict[str, Any]]:
    """The files a POST /ingest names (an upload's, or a JSON body's paths under the ingest root) and the
    metadata to tag their documents with (an upload's ``metadata`` field)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await save_uploads(request, settings)
    if ctype.startswith("application/json"):
        try:
            req = IngestPaths.model_validate(parse_json(await request.body()))
        except ValidationError as exc:
            raise HTTPException(422, _errors(exc.errors(include_url=False))) from None
        return confined_paths(req, settings), {}
    raise HTTPException(415, "send multipart/form-data files or a JSON body {\"paths\": [...]}")


def _label(source: PathSource, view: SourceView) -> str:
    """What a run ingests, for the ingest view: its first few paths, named as the read API names them."""
    names = [view.name(str(p)) or "(the ingest root)" for p in source.paths]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _chunk_window(st: AppState, doc_id: str, around: str | None, limit: int, offset: int) -> dict[str, Any] | None:
    """A document's record and ``limit`` of its committed chunks from ``offset``, or centred on the
    chunk ``around``; None when there is no such document (or no such chunk in it)."""
    meta = st.engine.stores.meta
    rec = meta.get_document(doc_id)
    if rec is None:
        return None
    ids = meta.chunk_ids_of([doc_id])  # in position order
    if around is not None:
        if around not in ids:
            return None
        offset = max(0, ids.index(around) - limit // 2)
    chunks = sorted(meta.get_chunks(ids[offset:offset + limit]).values(), key=lambda c: c.position)
    return {"document": st.view.document(asdict(rec)), "total_chunks": len(ids), "offset": offset, "limit": limit,
            "focus": around,
            "chunks": [{"chunk_id": c.chunk_id, "position": c.position, "page_start": c.page_start,
                        "page_end": c.page_end, "header": c.header, "text": c.text} for c in chunks]}
