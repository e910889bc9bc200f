"""``fanrag serve``: the HTTP API (extra ``server``) under uvicorn."""

from __future__ import annotations

import click

from ..errors import require
from ..settings import Settings
from .options import home_option


@click.command("serve")
@home_option
@click.option("--host", default=None, help="Interface to bind (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port, 8000).")
@click.option("--token", default=None, envvar="FANRAG_TOKEN", show_envvar=True,
              help="Bearer token for ingest/delete; without one the API is read-only. Prefer the env var.")
@click.option("--ingest-root", type=click.Path(file_okay=False, exists=True), default=None,
              help="POST /ingest may read server-side paths under this directory only.")
def serve(home: str | None, host: str | None, port: int | None, token: str | None, ingest_root: str | None) -> None:
    """Serve query, ingest and document endpoints over HTTP."""
    given = {"host": host, "port": port, "token": token, "ingest_root": ingest_root}
    settings = Settings.load(home=home, overrides={"server": {k: v for k, v in given.items() if v is not None}})
    uvicorn = require("uvicorn", feature="fanrag serve", extra="server")
    from ..server.app import create_app

    cfg = settings.server
    click.echo(f"fanrag: serving {settings.home} on http://{cfg.host}:{cfg.port} "
               f"(writes {'enabled' if cfg.token else 'disabled: no token'})", err=True)
    uvicorn.run(create_app(settings), host=cfg.host, port=cfg.port, log_level="info")
