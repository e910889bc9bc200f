"""The HTTP API: ``create_app(settings) -> FastAPI``.

    POST   /query              {query, top_n?, branches?, generate?} -> QueryResult.to_dict()
    POST   /ingest             multipart upload, or JSON {paths: [...]} under server.ingest_root   (token)
    GET    /documents          committed documents (filter by status; paged)
    DELETE /documents/{id}                                                                       (token)
    GET    /healthz, /metrics  (Prometheus text), /docs and /openapi.json

Write endpoints need ``Authorization: Bearer <server.token>``; with no token configured they are off
(403) and the index is opened read-only, so ``fanrag ingest`` can keep writing to it. Request bodies
larger than ``server.max_upload_mb`` get 413, whether or not they declare a Content-Length.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ..errors import ConfigError, FanragError, MissingExtraError, QueryError
from ..settings import Settings
from ..types import BranchName

try:
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the HTTP server", "server", exc.name) from exc

from .metrics import Metrics

if TYPE_CHECKING:
    from ..engine import Engine

UPLOADS = "uploads"


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    top_n: int | None = Field(default=None, ge=1, le=100)
    branches: list[BranchName] | None = None
    generate: bool = True


class IngestPaths(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, max_length=10_000)


@dataclass
class _State:
    settings: Settings
    engine: Engine
    metrics: Metrics
    write_lock: asyncio.Lock  # one ingest/delete at a time: the stores have one writer


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


def _open_state(settings: Settings) -> _State:
    from ..engine import Engine

    # Without a token nothing can be written through the API, so take no writer lock.
    engine = Engine.open(settings=settings, mode="write" if settings.server.token else "read")
    return _State(settings, engine, Metrics(), asyncio.Lock())


def _state(request: Request) -> _State:
    return request.app.state.fanrag


StateDep = Annotated[_State, Depends(_state)]
_bearer = HTTPBearer(auto_error=False, description="server.token; required by ingest and delete")


def _writer(st: StateDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Guard of the write endpoints: 403 when writes are off, 401 without the right bearer token."""
    token = st.settings.server.token
    if not token:
        raise HTTPException(403, "writes are disabled: start the server with a token (server.token)")
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def create_app(settings: Settings) -> FastAPI:
    """The API over ``settings.home``; the index opens when the app starts (lifespan) and closes with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.fanrag = await asyncio.to_thread(_open_state, settings)
        try:
            yield
        finally:
            app.state.fanrag.engine.close()

    app = FastAPI(title="fanrag", version="0.1.0", lifespan=lifespan,
                  description="Retrieval-augmented generation, parallel by design.")
    app.add_middleware(BodyLimit, limit=settings.server.max_upload_mb << 20)

    @app.exception_handler(FanragError)
    async def fanrag_error(_request: Request, exc: FanragError) -> JSONResponse:
        status = 400 if isinstance(exc, QueryError | ConfigError) else 500
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.post("/query", summary="Answer a question with cited sources")
    async def query(req: QueryRequest, st: StateDep) -> dict[str, Any]:
        try:
            result = await st.engine.aquery(req.query, branches=req.branches, top_n=req.top_n,
                                               generate=req.generate)
        except FanragError:
            st.metrics.queries.labels("error").inc()
            raise
        st.metrics.observe_query(result)
        return result.to_dict()

    @app.post("/ingest", summary="Ingest uploaded files or server-side paths", dependencies=[Depends(_writer)],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": IngestPaths.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def ingest(request: Request, st: StateDep) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            paths = await _save_uploads(request, st.settings)
        elif ctype.startswith("application/json"):
            paths = _checked_paths(await _json_body(request), st.settings)
        else:
            raise HTTPException(415, "send multipart/form-data files or a JSON body {\"paths\": [...]}")
        async with st.write_lock:
            summary = (await st.engine.aingest(paths)).to_dict()
        st.metrics.observe_ingest(summary)
        return summary

    @app.get("/documents", summary="List documents")
    async def documents(st: StateDep,
                        status: Literal["committed", "pending", "failed"] | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        recs = await asyncio.to_thread(st.engine.stores.meta.documents, status, None, limit, offset)
        return {"documents": [asdict(r) for r in recs], "limit": limit, "offset": offset}

    @app.delete("/documents/{doc_id}", summary="Delete a document everywhere", dependencies=[Depends(_writer)])
    async def delete_document(doc_id: str, st: StateDep) -> dict[str, Any]:
        if await asyncio.to_thread(st.engine.stores.meta.get_document, doc_id) is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        async with st.write_lock:
            n = await asyncio.to_thread(st.engine.delete_documents, [doc_id])
        return {"doc_id": doc_id, "deleted": n}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "writes": bool(settings.server.token)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(st: StateDep) -> Response:
        body, ctype = st.metrics.render()
        return Response(body, media_type=ctype)

    return app


async def _json_body(request: Request) -> IngestPaths:
    try:
        return IngestPaths.model_validate(await request.json())
    except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError are both ValueErrors
        detail = exc.errors(include_url=False) if isinstance(exc, ValidationError) else f"invalid JSON: {exc}"
        raise HTTPException(422, detail) from exc


def _checked_paths(req: IngestPaths, settings: Settings) -> list[Path]:
    """Resolve each path (relative ones against the root) and refuse any outside server.ingest_root."""
    if not settings.server.ingest_root:
        raise HTTPException(403, "ingesting server-side paths is disabled: set server.ingest_root")
    root = Path(settings.server.ingest_root).resolve()
    out = []
    for raw in req.paths:
        p = (root / raw).resolve()  # an absolute raw replaces root; symlinks and .. are resolved first
        if not p.is_relative_to(root):
            raise HTTPException(403, f"{raw!r} is outside server.ingest_root")
        out.append(p)
    return out


async def _save_uploads(request: Request, settings: Settings) -> list[Path]:
    """Store each uploaded file under ``home/uploads/<content hash>/<name>``: the same upload keeps the
    same path (hence the same document id) and is recognised as unchanged next time."""
    limit = settings.server.max_upload_mb << 20
    form = await request.form(max_part_size=limit, max_files=1000)
    saved: list[Path] = []
    for _key, value in form.multi_items():
        if isinstance(value, str):
            continue
        name = Path(value.filename or "").name
        if not name or name in (".", ".."):
            raise HTTPException(400, "every uploaded file needs a file name")
        data = await value.read()
        dest = settings.home / UPLOADS / hashlib.blake2b(data, digest_size=8).hexdigest() / name
        await asyncio.to_thread(_write_file, dest, data)
        saved.append(dest)
    await form.close()
    if not saved:
        raise HTTPException(422, "no files in the upload")
    return saved


def _write_file(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    shutil.move(tmp, dest)
