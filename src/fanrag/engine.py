"""The one front door: ``Engine`` owns the settings, the stores, the embedder and the retriever.

    with Engine.open("my-index") as engine:                 # writer: takes the home's lock
        summary = engine.ingest(["docs/"])
    with Engine.open("my-index", mode="read") as engine:    # reader: no lock, sees what is committed
        result = engine.query("How do I cancel an asyncio task?")

The CLI, the HTTP server and the evaluation runner all open an index through ``Engine.open``, so they
see the same checks (the embedder must be the one the index was built with) and the same retriever.
``ingest``/``query`` are thin sync edges over ``aingest``/``aquery``; the logic lives once, in the
ingestion pipeline and the retriever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from .embed.base import Embedder
from .ingest.sources import JobSource, PathSource
from .ingest.summary import IngestSummary, Progress
from .settings import Settings
from .stores import StoreSet, open_stores
from .types import DocStatus, IndexStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .retrieve import QueryResult, Retriever, RetrievalResult
    from .retrieve.phases import Phase

Mode = Literal["read", "write"]


class Engine:
    def __init__(self, settings: Settings, stores: StoreSet, embedder: Embedder) -> None:
        self.settings = settings
        self.stores = stores
        self.embedder = embedder
        self._retriever: Retriever | None = None

    @classmethod
    def open(cls, home: str | Path | None = None, settings: Settings | None = None, *, mode: Mode = "write",
             overrides: dict[str, Any] | None = None) -> Engine:
        """Open the index at ``home``. ``mode="write"`` creates it if needed and takes the writer lock;
        ``mode="read"`` takes no lock and creates nothing. Either way the configured embedder must be the
        one the index was built with (same model, same dimension), or a StoreError names both."""
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', not {mode!r}")
        if settings is None:
            settings = Settings.load(home=home, overrides=overrides)
        elif home is not None:
            settings = settings.replace(home=Path(home))
        embedder = _create_embedder(settings)
        try:
            stores = open_stores(settings, mode=mode, dim=embedder.dim, model=embedder.name)
        except BaseException:
            embedder.close()
            raise
        return cls(settings, stores, embedder)

    # ------------------------------------------------------------------ ingestion

    async def aingest(self, paths: Iterable[str | Path] | JobSource, *, prune: bool = False,
                      progress: Progress | None = None, password: str | None = None) -> IngestSummary:
        from .ingest.executors import create_executor
        from .ingest.pipeline import IngestPipeline

        source = paths if isinstance(paths, JobSource) else PathSource(
            paths, password=password, exclude=[self.settings.home])
        executor = create_executor(self.settings, self.embedder)
        try:
            pipeline = IngestPipeline(self.settings, self.stores, self.embedder, executor, progress)
            return await pipeline.arun(source, prune=prune)
        finally:
            executor.close()

    def ingest(self, paths: Iterable[str | Path] | JobSource, **kw: Any) -> IngestSummary:
        return asyncio.run(self.aingest(paths, **kw))

    # ------------------------------------------------------------------ retrieval

    @property
    def retriever(self) -> Retriever:
        """The retriever over this engine's stores and embedder, built on first use; ``close`` stops it."""
        if self._retriever is None:
            from .graph import create_extractor
            from .retrieve import Retriever

            extractor = create_extractor(self.settings.stores.entity_extractor)
            self._retriever = Retriever(self.settings, self.stores, self.embedder, extractor)
        return self._retriever

    async def aquery(self, text: str, **kw: Any) -> QueryResult:
        """Retrieve, rerank and answer (see ``Retriever.aquery`` for the options)."""
        return await self.retriever.aquery(text, **kw)

    def query(self, text: str, **kw: Any) -> QueryResult:
        return asyncio.run(self.aquery(text, **kw))

    def astream(self, text: str, **kw: Any) -> AsyncIterator[Phase]:
        """The query's phases as they happen: its sources, then each answer token, then the result
        (``Retriever.astream``): what a streaming client shows."""
        return self.retriever.astream(text, **kw)

    async def aretrieve(self, text: str, **kw: Any) -> RetrievalResult:
        """The fused hits and every branch's lists, without rerank or answer (``Retriever.aretrieve``)."""
        return await self.retriever.aretrieve(text, **kw)

    def retrieve(self, text: str, **kw: Any) -> RetrievalResult:
        return asyncio.run(self.aretrieve(text, **kw))

    # ------------------------------------------------------------------ management

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        from .ingest.writer import delete_everywhere

        n = delete_everywhere(self.stores, list(doc_ids))
        self.stores.vectors.flush()
        return n

    def status(self) -> IndexStatus:
        s = self.stores
        meta = s.meta.stats()
        return IndexStatus(
            home=str(self.settings.home.resolve()), embedder=self.embedder.name, sources=int(meta["sources"]),
            documents=DocStatus.from_counts(meta["documents_by_status"]), chunks=int(meta["chunks"]),
            failures=int(meta["failures"]), vectors=s.vectors.count(), vector_shards=s.vectors.n_shards,
            keyword_chunks=s.keywords.count(), graph=dict(s.graph.stats()),
            schema_version=int(meta.get("schema_version", 0)))

    def close(self) -> None:
        """Stop the retriever's thread pools, then close the stores (releasing the lock) and the embedder."""
        try:
            if self._retriever is not None:
                self._retriever.close()
                self._retriever = None
            self.stores.close()
        finally:
            self.embedder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_embedder(settings: Settings) -> Embedder:
    from .embed import create_embedder

    return create_embedder(settings.embed)
