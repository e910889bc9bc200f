"""The Python API: one object that owns the settings, the stores and the embedder.

    with Engine.open("my-index") as engine:
        summary = engine.ingest(["docs/"])
        result = engine.query("How do I cancel an asyncio task?")

``ingest``/``query`` are thin sync edges over ``aingest``/``aquery``; the logic lives once, in the
ingestion pipeline and the retriever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from .embed.base import Embedder
from .ingest.sources import JobSource, PathSource
from .ingest.summary import IngestSummary, Progress
from .settings import Settings
from .stores import StoreSet, open_stores


class Engine:
    def __init__(self, settings: Settings, stores: StoreSet, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self._embedder = embedder
        self._retriever: Any = None

    @classmethod
    def open(cls, home: str | Path | None = None, settings: Settings | None = None, *, mode: str = "write",
             overrides: dict[str, Any] | None = None) -> Engine:
        """Open (creating if needed) the index at ``home``. ``mode="read"`` takes no writer lock."""
        if settings is None:
            settings = Settings.load(home=home, overrides=overrides)
        elif home is not None:
            settings = settings.replace(home=Path(home))
        settings.home.mkdir(parents=True, exist_ok=True)
        embedder = None
        dim = None
        if mode == "write":
            embedder = _create_embedder(settings)
            dim = embedder.dim
        stores = open_stores(settings, mode=mode, dim=dim, model=embedder.name if embedder else "")
        return cls(settings, stores, embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = _create_embedder(self.settings)
        return self._embedder

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
    def retriever(self) -> Any:
        if self._retriever is None:
            from .graph.extract import create_extractor
            from .retrieve import Retriever

            extractor = create_extractor(self.settings.stores.entity_extractor)
            self._retriever = Retriever(self.settings, self.stores, self.embedder, extractor)
        return self._retriever

    async def aquery(self, text: str, **kw: Any) -> Any:
        return await self.retriever.aquery(text, **kw)

    def query(self, text: str, **kw: Any) -> Any:
        return asyncio.run(self.aquery(text, **kw))

    # ------------------------------------------------------------------ management

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        from .ingest.pipeline import delete_everywhere

        n = delete_everywhere(self.stores, list(doc_ids))
        self.stores.vectors.flush()
        return n

    def status(self) -> dict[str, Any]:
        s = self.stores
        meta = s.meta.stats()
        return {
            "home": str(self.settings.home.resolve()),
            "embedder": self.settings.embed.backend + "/" + self.settings.embed.model,
            **meta,
            "vectors": s.vectors.count(),
            "vector_shards": s.vectors.n_shards,
            "keyword_chunks": s.keywords.count(),
            "graph": s.graph.stats(),
        }

    def close(self) -> None:
        self.stores.close()
        if self._embedder is not None:
            self._embedder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_embedder(settings: Settings) -> Embedder:
    from .embed import create_embedder

    return create_embedder(settings.embed)
