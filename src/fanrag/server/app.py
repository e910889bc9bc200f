"""The HTTP API: ``create_app(settings) -> FastAPI``.

    POST   /query              {query, top_n?, branches?, generate?} -> QueryResult.to_dict()       (read)
    POST   /ingest             multipart upload, or JSON {paths: [...]} under server.ingest_root   (token)
    GET    /documents          committed documents (filter by status; paged)                       (read)
    DELETE /documents/{id}                                                                       (token)
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
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ..errors import ConfigError, FanragError, MissingExtraError, QueryError
from ..settings import Settings
from ..types import BranchName

try:
    from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the HTTP server", "server", exc.name) from exc

from .files import IngestPaths, SourceView, confined_paths, save_uploads
from .http import BodyLimit, SafeJSONResponse, parse_json
from .metrics import Metrics

if TYPE_CHECKING:
    from ..engine import Engine
    from ..ingest.sources import PathSource

MAX_OFFSET = 2**63 - 1  # the SQL stores' bigint: a larger OFFSET is a 422, not an overflow


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)  # a lone surrogate is refused here (string_unicode)
    top_n: int | None = Field(default=None, ge=1, le=100,
                              description="chunks kept for the answer; at most retrieval.candidates")
    branches: list[BranchName] | None = None
    generate: bool = True


@dataclass
class _State:
    settings: Settings
    engine: Engine
    metrics: Metrics
    view: SourceView
    write_lock: asyncio.Lock  # one ingest/delete at a time: the stores have one writer


def open_engine(settings: Settings) -> Engine:
    """The index the app serves. Without a token nothing can be written through the API, so it takes no
    writer lock; with one it is the writer (IndexLocked if another process writes to the home)."""
    from ..engine import Engine

    return Engine.open(settings=settings, mode="write" if settings.server.token else "read")


def _state(request: Request) -> _State:
    return request.app.state.fanrag


StateDep = Annotated[_State, Depends(_state)]
Credentials = Annotated[HTTPAuthorizationCredentials | None,
                        Depends(HTTPBearer(auto_error=False, description="server.token (writes) or "
                                           "server.read_token (reads, when set)"))]


def _holds(creds: HTTPAuthorizationCredentials | None, *tokens: str) -> bool:
    given = creds.credentials.encode() if creds is not None else b""
    return any(t and hmac.compare_digest(given, t.encode()) for t in tokens)


def _unauthorized(what: str) -> HTTPException:
    return HTTPException(401, f"missing or wrong bearer token ({what})", headers={"WWW-Authenticate": "Bearer"})


def _writer(st: StateDep, creds: Credentials) -> None:
    """Guard of the write endpoints: 403 when writes are off, 401 without the right bearer token."""
    token = st.settings.server.token
    if not token:
        raise HTTPException(403, "writes are disabled: start the server with a token (server.token)")
    if not _holds(creds, token):
        raise _unauthorized("server.token")


def _reader(st: StateDep, creds: Credentials) -> None:
    """Guard of the read endpoints: open unless server.read_token is set; the write token reads too."""
    cfg = st.settings.server
    if cfg.read_token and not _holds(creds, cfg.read_token, cfg.token):
        raise _unauthorized("server.read_token")


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The API over ``settings.home``. Without ``engine`` the index opens when the app starts (lifespan)
    and closes with it; ``fanrag serve`` opens it first (a locked home is one line, not a traceback) and
    closes it itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = engine if engine is not None else await asyncio.to_thread(open_engine, settings)
        app.state.fanrag = _State(settings, opened, Metrics(), SourceView(settings), asyncio.Lock())
        try:
            yield
        finally:
            if opened is not engine:  # the app opened it: the app closes it
                opened.close()

    app = FastAPI(title="fanrag", version="0.1.0", lifespan=lifespan, default_response_class=SafeJSONResponse,
                  description="Retrieval-augmented generation, parallel by design.")
    app.add_middleware(BodyLimit, limit=settings.server.max_upload_mb << 20)
    _error_handlers(app)
    reads = [Depends(_reader)]
    writes = [Depends(_writer)]

    @app.post("/query", summary="Answer a question with cited sources", dependencies=reads)
    async def query(req: QueryRequest, st: StateDep) -> dict[str, Any]:
        candidates = st.settings.retrieval.candidates
        if req.top_n is not None and req.top_n > candidates:  # the retriever ranks no more than that
            raise HTTPException(422, f"top_n {req.top_n} is above retrieval.candidates ({candidates}), the "
                                     "most chunks a query ranks")
        try:
            result = await st.engine.aquery(req.query, branches=req.branches, top_n=req.top_n,
                                               generate=req.generate)
        except FanragError:
            st.metrics.queries.labels("error").inc()
            raise
        st.metrics.observe_query(result)
        return st.view.query(result.to_dict())

    @app.post("/ingest", summary="Ingest uploaded files or server-side paths", dependencies=writes,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": IngestPaths.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def ingest(request: Request, st: StateDep) -> dict[str, Any]:
        source = await _ingest_source(request, st.settings)  # validated and deduplicated before the lock
        async with st.write_lock:
            summary = source.report(await st.engine.aingest(source)).to_dict()
        st.metrics.observe_ingest(summary)
        return summary

    @app.get("/documents", summary="List documents", dependencies=reads)
    async def documents(st: StateDep,
                        status: Literal["committed", "pending", "failed"] | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        recs = await asyncio.to_thread(st.engine.stores.meta.documents, status, None, limit, offset)
        return {"documents": [st.view.document(asdict(r)) for r in recs], "limit": limit, "offset": offset}

    @app.delete("/documents/{doc_id}", summary="Delete a document everywhere", dependencies=writes)
    async def delete_document(doc_id: Annotated[str, Path(max_length=128, pattern=r"^[\w.:-]+$")],
                              st: StateDep) -> dict[str, Any]:
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


def _error_handlers(app: FastAPI) -> None:
    """Errors become a status and one line: the library's own by kind, validation errors as 422 (even
    when the input they echo cannot be encoded), anything else as a bare 500 (the traceback is logged)."""

    @app.exception_handler(FanragError)
    async def fanrag_error(_request: Request, exc: FanragError) -> SafeJSONResponse:
        status = 400 if isinstance(exc, QueryError | ConfigError) else 500
        return SafeJSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": _errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": f"internal error: {type(exc).__name__} (see the server log)"},
                                status_code=500)


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


async def _ingest_source(request: Request, settings: Settings) -> PathSource:
    """The files a POST /ingest names: an upload's, or a JSON body's paths under the ingest root."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await save_uploads(request, settings)
    if ctype.startswith("application/json"):
        try:
            req = IngestPaths.model_validate(parse_json(await request.body()))
        except ValidationError as exc:
            raise HTTPException(422, _errors(exc.errors(include_url=False))) from None
        return confined_paths(req, settings)
    raise HTTPException(415, "send multipart/form-data files or a JSON body {\"paths\": [...]}")
