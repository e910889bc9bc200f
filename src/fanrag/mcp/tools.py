"""What the MCP tools do, with no MCP in it: ``McpTools`` calls the engine and returns the typed results
of ``models.py``; ``server.py`` only registers these methods with the SDK and maps errors. Tests call
it directly, and through a real MCP client.

    search(query, top_n, branches, filter)   retrieve and rerank, no answer: numbered chunks
    answer(query, top_n, branches, filter)   the same, then a cited answer
    ingest(paths, bearer)                    paths under the ingest root; the write token over HTTP
    status()                                 what the index holds

``Access`` is what a server lets its callers do; the rules are the HTTP server's (docs/security.md):

- **Ingest** is off unless the server was started for it (``--allow-ingest`` over stdio, a write token
  over HTTP), and it needs an ingest root. Paths are checked by ``fanrag.server.files.confined_paths``,
  the very function behind ``POST /ingest {"paths": [...]}``: relative to the root (or absolute inside
  it), each resolved with its symlinks and refused whole if it lies outside; a file met in the walk that
  resolves outside fails by name in the summary. Over HTTP a call must carry the write token
  (``Authorization: Bearer``); over stdio the local user who started the server is trusted.
- **Names**: over HTTP sources are named as the read API names them (``SourceView``: relative to the
  ingest root, never an absolute server path); over stdio as the index holds them.
- **Filters**: ``filter`` (the filter language, docs/filters.md) is handed to the engine's query, which
  applies it inside every branch; an engine whose query takes none (``supports_filter``, e.g. a
  subclass) refuses a non-empty filter rather than silently ignoring it.

Every refusal is a ``FanragError`` with a one-line message: ``AccessDenied`` for what the configuration
or the token does not allow, ``QueryError`` for a query the engine cannot run.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import ConfigError, FanragError, QueryError
from . import models

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..engine import Engine
    from ..ingest.sources import PathSource
    from ..ingest.summary import IngestSummary
    from ..retrieve.results import QueryResult
    from ..server.files import SourceView
    from ..settings import Settings
    from ..types import Hit

FILTER_PARAM = "filter"  # the keyword the engine's query takes a filter by, once it does


class AccessDenied(FanragError):
    """A call this server's configuration or the caller's token does not allow (one line: why)."""


@dataclass(frozen=True, slots=True)
class Access:
    """What a server lets its callers do. ``ingest``: the ingest tool is on (the engine is the index's
    writer and its settings name ``server.ingest_root``). ``write_token``: the bearer token an ingest call
    must carry; required when ``remote``, empty over stdio (the local user is trusted). ``remote``: the
    callers are HTTP clients, who see sources named as the read API names them."""

    ingest: bool = False
    write_token: str = ""
    remote: bool = False

    def __post_init__(self) -> None:
        if self.remote and self.ingest and not self.write_token:
            raise ValueError("ingest over HTTP needs a write token")


def access_for(settings: Settings, *, http: bool, allow_ingest: bool) -> Access:
    """What ``fanrag mcp`` lets its callers do. Over stdio ingest is on with ``--allow-ingest`` (the
    local user is trusted); over HTTP with a write token (``server.token``), which every ingest call
    must carry. Either way it needs an ingest root. Raises ConfigError naming what is missing."""
    cfg = settings.server
    if http and allow_ingest and not cfg.token:
        raise ConfigError("server.token", "ingest over HTTP needs a write token (--token, FANRAG_TOKEN)")
    ingest = bool(cfg.token) if http else allow_ingest
    if ingest and not cfg.ingest_root:
        raise ConfigError("server.ingest_root", "the ingest tool reads files under an ingest root only: give "
                                                "--ingest-root DIR" + (" (or no write token)" if http else ""))
    return Access(ingest=ingest, write_token=cfg.token if http else "", remote=http)


class McpTools:
    """The tools over one opened engine (the index's writer when ``access.ingest``). Ingests run one at
    a time: the index has one writer."""

    def __init__(self, engine: Engine, access: Access) -> None:
        self.engine = engine
        self.access = access
        self._write_lock = asyncio.Lock()
        self._view = _source_view(engine) if access.remote else None

    # ------------------------------------------------------------------ tools

    async def search(self, query: str, top_n: int | None = None, branches: Sequence[str] | None = None,
                     filter: dict[str, Any] | str | None = None) -> models.SearchResult:
        result = await self.engine.aquery(query, generate=False, **self._query_kw(top_n, branches, filter))
        return models.SearchResult(query=query, chunks=self._numbered(result.hits))

    async def answer(self, query: str, top_n: int | None = None, branches: Sequence[str] | None = None,
                     filter: dict[str, Any] | str | None = None) -> models.AnswerResult:
        result = await self.engine.aquery(query, **self._query_kw(top_n, branches, filter))
        return models.AnswerResult(
            query=query, answer=result.answer, generator=result.generator,
            citations=[models.Citation(**{**c.to_dict(), "source": self.name(c.source)}) for c in result.citations],
            sources=self._numbered(self._cited_order(result)))

    async def ingest(self, paths: Sequence[str], bearer: str | None = None) -> models.IngestResult:
        self._check_write(bearer)
        source = self._confined(paths)  # checked whole before the lock: a refused call waits for nothing
        async with self._write_lock:
            summary = source.report(await self.engine.aingest(source))
        return self._summary(summary)

    async def status(self) -> models.StatusResult:
        st = await asyncio.to_thread(self.engine.status)
        d = st.to_dict() | {"documents": models.DocumentCounts(committed=st.documents.committed,
                                                               pending=st.documents.pending,
                                                               failed=st.documents.failed),
                            "ingest": self.access.ingest}
        if self._view is not None:
            d["home"] = Path(st.home).name
        return models.StatusResult.model_validate(d)

    # ------------------------------------------------------------------ naming and errors

    def name(self, source: str) -> str:
        """A source as this server's callers may see it."""
        return source if self._view is None else self._view.name(source)

    def scrub(self, message: str) -> str:
        """An error message as this server's callers may see it: one line, no absolute server path."""
        line = message.strip().splitlines()[0] if message.strip() else ""
        return line if self._view is None else self._view.scrub(line)

    # ------------------------------------------------------------------ helpers

    def _query_kw(self, top_n: int | None, branches: Sequence[str] | None,
                  filter: dict[str, Any] | str | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"top_n": top_n, "branches": list(branches) if branches else None}
        if filter:
            if not supports_filter(self.engine):
                raise QueryError("filters are not supported by this index's engine yet: call again without "
                                 "`filter`")
            kw[FILTER_PARAM] = filter
        return kw

    def _numbered(self, hits: Sequence[Hit]) -> list[models.NumberedChunk]:
        out = []
        for n, h in enumerate(hits, start=1):
            source = self.name(h.source)
            out.append(models.NumberedChunk(n=n, citation=cite(n, source, h.page), chunk_id=h.chunk_id,
                                            doc_id=h.doc_id, source=source, page=h.page,
                                            score=round(float(h.score), 6), text=h.text))
        return out

    def _cited_order(self, result: QueryResult) -> list[Hit]:
        """The answer's sources in the order its writer numbered them [1]..[n]: the configured generator's
        order, or relevance order when a model failed and the extractive answer replaced it."""
        retriever = self.engine.retriever
        return retriever.numbered(result.hits) if result.generator == retriever.generator.name else list(result.hits)

    def _check_write(self, bearer: str | None) -> None:
        if not self.access.ingest:
            raise AccessDenied("ingest is off on this server: start it with --allow-ingest (stdio) or a write "
                               "token (HTTP), and an ingest root")
        if self.access.write_token and not holds(bearer, self.access.write_token):
            raise AccessDenied("missing or wrong bearer token (server.token): ingest needs the write token")

    def _confined(self, paths: Sequence[str]) -> PathSource:
        """The source of an ingest: the HTTP server's own check (``confined_paths``), its refusals as
        one line."""
        from fastapi import HTTPException

        from ..server.files import IngestPaths, confined_paths

        try:
            return confined_paths(IngestPaths(paths=list(paths)), self.engine.settings)
        except ValidationError as exc:
            raise AccessDenied(f"invalid paths: {validation_reason(exc)}") from None
        except HTTPException as exc:
            raise AccessDenied(str(exc.detail)) from None

    def _summary(self, s: IngestSummary) -> models.IngestResult:
        d = s.to_dict()
        failed = [models.Failure(source=self.name(f["source"]), reason=self.scrub(f["reason"])) for f in d["failed"]]
        return models.IngestResult(sources=s.sources, ok=s.ok, unchanged=s.unchanged, failed=failed,
                                   missing_paths=[self.name(p) for p in d["missing_paths"]], removed=s.removed,
                                   chunks=s.chunks, pages=s.pages, wall_s=d["wall_s"])


def cite(n: int, source: str, page: int) -> str:
    """How to cite a chunk: ``[n] source, p. 3`` (as the OpenAI-compatible endpoint lists sources)."""
    return f"[{n}] {source}" + (f", p. {page}" if page else "")


def supports_filter(engine: Engine) -> bool:
    """Whether the engine's query takes a ``filter`` (the filter language, issue 12 item 1)."""
    return FILTER_PARAM in inspect.signature(engine.retriever.aquery).parameters


def holds(given: str | None, *tokens: str) -> bool:
    """Whether ``given`` is one of the (non-empty) ``tokens``, compared in constant time."""
    raw = (given or "").encode()
    return any(t and hmac.compare_digest(raw, t.encode()) for t in tokens)


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None without one)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def validation_reason(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message`` for each problem, the input not echoed."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts).replace("\n", " ")


def _source_view(engine: Engine) -> SourceView:
    from ..server.files import SourceView

    return SourceView(engine.settings)
