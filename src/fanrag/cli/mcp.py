"""``fanrag mcp``: the index as an MCP server (extra ``mcp``), over stdio (the default: an MCP client
starts it as a subprocess) or streamable HTTP (``--http``, at ``http://HOST:PORT/mcp``).

The index opens read-only, taking no writer lock, unless the ingest tool is on: ``--allow-ingest`` over
stdio, a write token over HTTP (docs/mcp.md says why). Settings are the HTTP server's: ``server.token``,
``server.read_token`` and ``server.ingest_root`` mean the same here as for ``fanrag serve``. Nothing but
the protocol goes to stdout; messages go to stderr.
"""

from __future__ import annotations

import click

from ..engine import Engine
from ..errors import require
from ..settings import Settings
from .options import home_option
from .serve import _loopback

DEFAULT_PORT = 8001  # fanrag serve's default is 8000: both can run side by side


@click.command("mcp")
@home_option
@click.option("--http", "http", is_flag=True, help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
@click.option("--host", default=None, help="(--http) Interface to bind (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="(--http) Port.")
@click.option("--token", default=None, envvar="FANRAG_TOKEN", show_envvar=True,
              help="(--http) Write token: turns the ingest tool on; each ingest call must carry it as a bearer "
                   "token. Prefer the env var.")
@click.option("--read-token", default=None, envvar="FANRAG_READ_TOKEN", show_envvar=True,
              help="(--http) Every request must carry this bearer token (or the write token). Prefer the env var.")
@click.option("--ingest-root", type=click.Path(file_okay=False, exists=True), default=None,
              help="The ingest tool reads files under this directory only.")
@click.option("--allow-ingest", is_flag=True, help="(stdio) Turn the ingest tool on (needs --ingest-root); the "
                                                   "index opens for writing.")
def mcp(home: str | None, http: bool, host: str | None, port: int, token: str | None, read_token: str | None,
        ingest_root: str | None, allow_ingest: bool) -> None:
    """Serve the index to MCP clients: tools search, answer, status, and ingest when it is on."""
    require("mcp", feature="fanrag mcp", extra="mcp")
    require("fastapi", feature="fanrag mcp", extra="mcp")
    from ..mcp.server import build_server, run_http, run_stdio
    from ..mcp.tools import McpTools, access_for

    given = {"host": host, "ingest_root": ingest_root}
    if http:  # over stdio the local user is trusted: no token applies, whatever the environment holds
        given |= {"token": token, "read_token": read_token}
    else:
        given |= {"token": "", "read_token": ""}
    settings = Settings.load(home=home, overrides={"server": {k: v for k, v in given.items() if v is not None}})
    access = access_for(settings, http=http, allow_ingest=allow_ingest)
    cfg = settings.server
    with Engine.open(settings=settings, mode="write" if access.ingest else "read") as engine:
        server = build_server(McpTools(engine, access))
        if not http:
            run_stdio(server)
            return
        if not cfg.read_token and not _loopback(cfg.host):
            click.echo(f"fanrag: warning: {cfg.host} is not a loopback address and server.read_token is not set: "
                       "anyone who reaches the port can search the index", err=True)
        click.echo(f"fanrag: MCP server for {settings.home} on http://{cfg.host}:{port}/mcp (ingest "
                   f"{'on: write token' if access.ingest else 'off'}, reads "
                   f"{'need a token' if cfg.read_token else 'open'})", err=True)
        run_http(server, cfg.host, port, cfg.read_token, cfg.token)
