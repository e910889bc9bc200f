"""The MCP tools' typed results. The SDK publishes each as the tool's output schema and sends it as
structured content (with the same JSON as text, for clients that read only text); the tool logic
(``tools.py``) builds them without the SDK.

Sources are named as the transport allows (``tools.Naming``): over stdio as the index holds them (the
local user's own paths), over HTTP as ``fanrag serve``'s read API names them (relative to the ingest
root, never an absolute server path).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class NumberedChunk(BaseModel):
    """A retrieved chunk, numbered as answers cite it."""

    n: int = Field(description="the citation number: [n]")
    citation: str = Field(description="'[n] source' with ', p. N' for a page: how to cite this chunk")
    chunk_id: str
    doc_id: str
    source: str = Field(description="the file the chunk comes from")
    page: int = Field(description="1-based page number; 0 for a format without pages")
    score: float = Field(description="relevance score (higher is better); comparable within one result only")
    text: str


class SearchResult(BaseModel):
    query: str
    chunks: list[NumberedChunk] = Field(description="the best chunks, most relevant first, numbered [1]..[n]")


class Citation(BaseModel):
    """One [n] of an answer, mapped to the chunk it cites."""

    n: int
    chunk_id: str
    doc_id: str
    source: str
    page: int


class AnswerResult(BaseModel):
    query: str
    answer: str = Field(description="the answer, citing its sources as [n]")
    generator: str = Field(description="who wrote it: extractive (quotes, no model), openai or llama-cpp")
    citations: list[Citation] = Field(description="each [n] of the answer, mapped to its chunk")
    sources: list[NumberedChunk] = Field(description="the chunks the answer was written from, numbered as the "
                                                     "generator saw them")


class Failure(BaseModel):
    source: str
    reason: str


class IngestResult(BaseModel):
    sources: int = Field(description="source files seen")
    ok: int = Field(description="documents committed in this run")
    unchanged: int = Field(description="documents skipped: the same content is already indexed")
    failed: list[Failure] = Field(description="files that were not ingested, each with its one-line reason")
    missing_paths: list[str] = Field(description="paths given that do not exist")
    removed: int
    chunks: int
    pages: int
    wall_s: float


class DocumentCounts(BaseModel):
    committed: int
    pending: int
    failed: int


class StatusResult(BaseModel):
    """What the index holds, store by store (``fanrag status``)."""

    home: str = Field(description="the index directory (its name only, over HTTP)")
    embedder: str
    sources: int
    documents: DocumentCounts = Field(description="documents by state; only committed ones are searchable")
    chunks: int
    failures: int
    vectors: int
    vector_shards: int
    keyword_chunks: int
    graph: dict[str, int]
    schema_version: int
    ingest: bool = Field(description="whether this server's ingest tool is on")
