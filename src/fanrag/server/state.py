"""What every route shares: the app's state and the two guards.

    AppState       the settings, the opened engine, metrics, how sources are named, the write lock and
                   the ingest monitor; one per app, made when it starts (``create_app``'s lifespan)
    READS, WRITES  route dependencies: ``server.read_token`` (when set; the write token reads too) and
                   ``server.token`` (403 when unset: writes are off)

Both tokens are bearer tokens compared in constant time (docs/security.md).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..settings import Settings
from .files import SourceView
from .ingest_events import IngestMonitor
from .metrics import Metrics

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    metrics: Metrics
    view: SourceView
    write_lock: asyncio.Lock  # one ingest/delete at a time: the stores have one writer
    ingests: IngestMonitor


def _state(request: Request) -> AppState:
    return request.app.state.fanrag


StateDep = Annotated[AppState, Depends(_state)]
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


READS = [Depends(_reader)]
WRITES = [Depends(_writer)]
