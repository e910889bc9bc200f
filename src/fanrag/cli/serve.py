"""``fanrag serve``: the HTTP API and the web UI (extra ``server``) under uvicorn.

The index opens before uvicorn starts, so a home another process writes to (IndexLocked) or a bad
setting is one line and a non-zero exit, not an application-startup traceback.
"""

from __future__ import annotations

import ipaddress

import click

from ..errors import require
from ..settings import Settings
from .options import home_option

SHUTDOWN_GRACE_S = 3


@click.command("serve")
@home_option
@click.option("--host", default=None, help="Interface to bind (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port, 8000).")
@click.option("--token", default=None, envvar="FANRAG_TOKEN", show_envvar=True,
              help="Bearer token for ingest/delete; without one the API is read-only. Prefer the env var.")
@click.option("--read-token", default=None, envvar="FANRAG_READ_TOKEN", show_envvar=True,
              help="Bearer token for query, documents and metrics; without one they are open to whoever "
                   "reaches the port. Prefer the env var.")
@click.option("--ingest-root", type=click.Path(file_okay=False, exists=True), default=None,
              help="POST /ingest may read server-side paths under this directory only.")
def serve(home: str | None, host: str | None, port: int | None, token: str | None, read_token: str | None,
          ingest_root: str | None) -> None:
    """Serve the query, ingest and document endpoints, an OpenAI-compatible /v1 and the web UI over HTTP."""
    given = {"host": host, "port": port, "token": token, "read_token": read_token, "ingest_root": ingest_root}
    settings = Settings.load(home=home, overrides={"server": {k: v for k, v in given.items() if v is not None}})
    uvicorn = require("uvicorn", feature="fanrag serve", extra="server")
    from ..server.app import create_app, open_engine

    cfg = settings.server
    if not cfg.read_token and not _loopback(cfg.host):
        click.echo(f"fanrag: warning: {cfg.host} is not a loopback address and server.read_token is not set: "
                   "anyone who reaches the port can query and list the index", err=True)
    with open_engine(settings) as engine:  # IndexLocked here is one line (the CLI's error), exit 1
        click.echo(f"fanrag: serving {settings.home} on http://{cfg.host}:{cfg.port} "
                   f"(writes {'enabled' if cfg.token else 'disabled: no token'}, "
                   f"reads {'need a token' if cfg.read_token else 'open'}); web UI at /", err=True)
        # Streams (answers, the ingest events) stay open: on shutdown they get a few seconds to end.
        uvicorn.run(create_app(settings, engine), host=cfg.host, port=cfg.port, log_level="info",
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
