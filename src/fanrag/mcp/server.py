"""The MCP wiring (extra ``mcp``): ``McpTools``' methods registered with the official SDK's ``MCPServer``,
served over stdio or streamable HTTP. The logic is in ``tools.py``; this module adds only what is MCP's:

- typed tool signatures (the SDK derives each input schema from them, and each output schema from the
  ``models`` the tools return: structured output);
- errors as tool errors (``is_error``) with one line each, never a traceback: a bad argument names the
  field (``invalid arguments: top_n: Input should be greater than or equal to 1``), a fanrag error says
  what it says (over HTTP with the ingest root and upload directory made relative), anything else is
  ``internal error: <type> (see the server log)`` with the traceback on the server's stderr;
- over HTTP, the read token (``server.read_token``): a request without it (or the write token) gets 401
  before it reaches the protocol; the write token itself is checked per call, by the ingest tool.

``ingest`` is registered only when the server was started for it (``tools.access_for``), so a client
never sees a tool it cannot call. docs/mcp.md is the user's side of this.

No ``from __future__ import annotations`` here: the SDK reads the tools' annotations as objects, and
the ``filter`` argument's description is made when the server is built.
"""

import logging
from importlib.metadata import version
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError

from ..errors import FanragError, MissingExtraError
from ..types import BranchName
from . import models
from .tools import McpTools, bearer_of, holds, supports_filter, validation_reason

try:
    import anyio
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.shared.exceptions import MCPError
    from mcp.types import ToolAnnotations
    from starlette.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the MCP server", "mcp", exc.name) from exc

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SHUTDOWN_GRACE_S = 3
INSTRUCTIONS = (
    "fanrag answers from an index of the user's documents. Use `search` for the best chunks (each numbered "
    "[n], with its source, page and score) and `answer` for an answer that cites them as [n]; cite a chunk "
    "as its `citation` field says. `status` tells what the index holds.")

Query = Annotated[str, Field(min_length=1, max_length=4000, description="the question, or the text to search for")]
TopN = Annotated[int | None, Field(default=None, ge=1, le=100,
                                   description="how many chunks (default: retrieval.top_n; at most "
                                               "retrieval.candidates)")]
Branches = Annotated[list[BranchName] | None, Field(default=None, description="the retrieval branches to run "
                                                                              "(default: all configured)")]
Paths = Annotated[list[Annotated[str, Field(max_length=4096)]], Field(
    min_length=1, max_length=10_000,
    description="files or directories, relative to the server's ingest root (or absolute, inside it); "
                "\"\" is the root itself")]
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
INGEST = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


class FanragMCP(MCPServer):
    """``MCPServer`` whose every tool failure reaches the client as one line (module docstring)."""

    def __init__(self, tools: McpTools) -> None:
        super().__init__("fanrag", instructions=INSTRUCTIONS, version=version("fanrag"), log_level="WARNING")
        self.tools = tools

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except MCPError:
            raise
        except ToolError as exc:
            raise ToolError(self._reason(exc)) from exc

    def _reason(self, exc: ToolError) -> str:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            return f"invalid arguments: {validation_reason(cause)}"
        if isinstance(cause, FanragError):
            return self.tools.scrub(str(cause)) or type(cause).__name__
        if cause is not None:  # a crash: the client gets its type, the log gets the traceback
            log.error("MCP tool call failed", exc_info=cause)
            return f"internal error: {type(cause).__name__} (see the server log)"
        return self.tools.scrub(str(exc))  # the SDK's own: an unknown tool


def build_server(tools: McpTools) -> FanragMCP:
    """The MCP server over ``tools``: search, answer and status, and ingest when it is on."""
    server = FanragMCP(tools)
    filters = ("restrict the search by metadata (the filter language)" if supports_filter(tools.engine) else
               "not supported by this index's engine yet: leave it out (a filter is refused, not ignored)")
    Filter = Annotated[dict[str, Any] | str | None, Field(default=None, description=filters)]

    async def search(query: Query, top_n: TopN = None, branches: Branches = None,
                     filter: Filter = None) -> models.SearchResult:
        """Search the index: the best chunks for the query, reranked, each numbered [n] with its source,
        page, score and text, most relevant first. No answer is written."""
        return await tools.search(query, top_n, branches, filter)

    async def answer(query: Query, top_n: TopN = None, branches: Branches = None,
                     filter: Filter = None) -> models.AnswerResult:
        """Answer a question from the index: the answer citing its sources as [n], each citation mapped
        to its chunk, and the sources themselves."""
        return await tools.answer(query, top_n, branches, filter)

    async def status() -> models.StatusResult:
        """What the index holds: documents by state, chunks, vectors, keyword entries, the graph."""
        return await tools.status()

    server.add_tool(search, annotations=READ_ONLY)
    server.add_tool(answer, annotations=READ_ONLY)
    server.add_tool(status, annotations=READ_ONLY)
    if tools.access.ingest:

        async def ingest(paths: Paths, ctx: Context) -> models.IngestResult:
            """Ingest files and directories under the server's ingest root (PDF, HTML, Markdown, text, DOCX,
            JSONL). Unchanged files are skipped; each file that fails is named with its reason."""
            headers = ctx.headers or {}
            return await tools.ingest(paths, bearer=bearer_of(headers.get("authorization")))

        server.add_tool(ingest, annotations=INGEST)
    return server


def run_stdio(server: FanragMCP) -> None:
    """Serve on stdin/stdout until the client closes them."""
    anyio.run(server.run_stdio_async)


def http_app(server: FanragMCP, host: str, read_token: str, write_token: str) -> "ASGIApp":
    """The streamable HTTP app at ``MCP_PATH``, behind the read token when one is set. The SDK guards a
    loopback ``host`` against DNS rebinding (Host and Origin must be loopback)."""
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    return ReadGuard(app, read_token, write_token) if read_token else app


def run_http(server: FanragMCP, host: str, port: int, read_token: str, write_token: str) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    app = http_app(server, host, read_token, write_token)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


class ReadGuard:
    """ASGI middleware: an HTTP request must carry ``Authorization: Bearer`` with the read token or the
    write token (the write token reads too, as in ``fanrag serve``), else 401. Lifespan passes through."""

    def __init__(self, app: "ASGIApp", read_token: str, write_token: str) -> None:
        self.app = app
        self.tokens = (read_token, write_token)

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not holds(bearer_of(header), *self.tokens):
                response = JSONResponse({"detail": "missing or wrong bearer token (server.read_token)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
