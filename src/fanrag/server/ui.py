"""The web UI: plain HTML, CSS and JavaScript in ``static/``, served as they are (no build step, no CDN).

    GET /                 index.html: ask (the fan-out diagram, the streamed answer, citations that open
                          their chunk in its document) and ingest (uploads and the runs as they happen)
    GET /static/<file>    app.js, app.css

The page holds no index data and needs no token to load, like /docs; it sends the token the user types
(kept in the tab's sessionStorage) as a bearer token with every API call, so the API's rules hold.
Its Content-Security-Policy allows this origin only: no inline script, no other host.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


def mount(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
