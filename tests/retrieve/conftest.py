"""In-memory test doubles of the store, embedder and extractor protocols, a small corpus, and a helper
that serves an ASGI app on a loopback port for HTTP backend tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fanrag.settings import Settings
from fanrag.stores.base import DocumentRecord, ScoredId
from fanrag.types import Chunk

_WORD = re.compile(r"[a-z0-9]+")


def toks(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class HashEmbedder:
    """Bag of hashed words, L2-normalised: texts sharing words get a high cosine. Counts its calls."""

    name = "hash-64"
    dim = 64
    batch_size = 32

    def __init__(self, delay_s: float = 0.0, barrier: threading.Barrier | None = None) -> None:
        self.delay_s = delay_s
        self.barrier = barrier
        self.query_calls: list[str] = []
        self.batch_calls: list[list[str]] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in toks(text):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def _wait(self) -> None:
        if self.barrier is not None:  # one-shot, like MemKeywords
            barrier, self.barrier = self.barrier, None
            barrier.wait(timeout=5)
        if self.delay_s:
            time.sleep(self.delay_s)

    def embed_query(self, text: str) -> np.ndarray:
        self.query_calls.append(text)
        self._wait()
        return self._vec(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.batch_calls.append(list(texts))
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    embed_batch = embed

    def close(self) -> None:
        pass


class MemVectors:
    """Brute-force cosine search, chunks spread over shards by hash."""

    def __init__(self, dim: int, shards: int = 3) -> None:
        self.dim = dim
        self.shards: list[dict[str, np.ndarray]] = [{} for _ in range(shards)]
        self.shard_calls: Counter[int] = Counter()
        self.fail = False

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        for ch, v in zip(chunks, vectors, strict=True):
            self.shards[int(hashlib.md5(ch.chunk_id.encode()).hexdigest(), 16) % len(self.shards)][ch.chunk_id] = v

    def search_shard(self, shard: int, query: np.ndarray, k: int) -> list[ScoredId]:
        self.shard_calls[shard] += 1
        if self.fail:
            raise RuntimeError("vector index unavailable")
        scored = [ScoredId(cid, float(v @ query)) for cid, v in self.shards[shard].items()]
        return sorted(scored, key=lambda s: -s.score)[:k]

    def search(self, query: np.ndarray, k: int) -> list[ScoredId]:
        parts = [s for i in range(self.n_shards) for s in self.search_shard(i, query, k)]
        return sorted(parts, key=lambda s: -s.score)[:k]


class MemKeywords:
    """Plain BM25 (k1=1.2, b=0.75) over chunk texts."""

    def __init__(self, delay_s: float = 0.0, barrier: threading.Barrier | None = None) -> None:
        self.docs: dict[str, Counter[str]] = {}
        self.queries: list[str] = []
        self.delay_s = delay_s
        self.barrier = barrier

    def add(self, chunks: Sequence[Chunk], titles: dict[str, str] | None = None) -> None:
        for ch in chunks:
            self.docs[ch.chunk_id] = Counter(toks(ch.text))

    def search(self, query: str, k: int) -> list[ScoredId]:
        self.queries.append(query)
        if self.barrier is not None:  # one-shot: the PRF search that follows must not wait again
            barrier, self.barrier = self.barrier, None
            barrier.wait(timeout=5)
        if self.delay_s:
            time.sleep(self.delay_s)
        n = len(self.docs)
        avg = sum(sum(c.values()) for c in self.docs.values()) / max(n, 1)
        out = []
        for cid, bag in self.docs.items():
            length = sum(bag.values())
            s = 0.0
            for t in set(toks(query)):
                df = sum(1 for b in self.docs.values() if t in b)
                if t in bag:
                    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                    s += idf * bag[t] * 2.2 / (bag[t] + 1.2 * (0.25 + 0.75 * length / avg))
            if s > 0:
                out.append(ScoredId(cid, s))
        return sorted(out, key=lambda x: -x.score)[:k]


class MemGraph:
    def __init__(self) -> None:
        self.mentions: dict[str, list[str]] = {}

    def add(self, chunks: Sequence[Chunk]) -> None:
        for ch in chunks:
            for name, _ in ch.entities:
                self.mentions.setdefault(name, []).append(ch.chunk_id)

    def chunks_for_entities(self, names: Sequence[str], k: int, hops: int = 1) -> list[ScoredId]:
        score: Counter[str] = Counter()
        for n in names:
            for cid in self.mentions.get(n, []):
                score[cid] += 1
        return [ScoredId(c, float(s)) for c, s in score.most_common(k)]

    def known_entities(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n in self.mentions]


class MemMeta:
    """Committed chunks and documents only; ``pending`` chunks are indexed but never returned."""

    def __init__(self) -> None:
        self.chunks: dict[str, Chunk] = {}
        self.docs: dict[str, DocumentRecord] = {}

    def commit(self, rec: DocumentRecord, chunks: Sequence[Chunk]) -> None:
        self.docs[rec.doc_id] = rec
        for ch in chunks:
            self.chunks[ch.chunk_id] = ch

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        return {c: self.chunks[c] for c in chunk_ids if c in self.chunks}

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        return self.docs.get(doc_id)


class KnownExtractor:
    """Finds known entity names (lower-cased) in a query."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def extract_query(self, text: str) -> list[str]:
        low = text.lower()
        return [n for n in self.names if n in low]


_TEXTS = {
    "aspirin": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes. Aspirin also thins the blood and "
               "lowers the risk of heart attack. Common side effects of aspirin include stomach bleeding.",
    "insulin": "Insulin is a hormone made by the pancreas. Insulin lets cells take up glucose from the blood. "
               "Type 1 diabetes destroys the cells that make insulin.",
    "bm25": "BM25 is a ranking function used by search engines. BM25 scores documents by term frequency "
            "and inverse document frequency with length normalisation.",
    "dense": "Dense retrieval embeds queries and documents as vectors. Nearest neighbour search over the "
             "vectors finds documents with similar meaning even without shared words.",
    "hnsw": "HNSW is a graph index for approximate nearest neighbour search. HNSW builds layers of "
            "proximity graphs and searches them greedily.",
    "coffee": "Coffee contains caffeine, a stimulant. Caffeine blocks adenosine receptors and keeps people awake.",
    "volcano": "A volcano erupts when magma rises through the crust. Volcanic ash can disrupt air travel.",
    "tea": "Tea also contains caffeine, though usually less than coffee. Green tea is rich in antioxidants.",
}
_ENTITIES = {"aspirin": ["aspirin"], "insulin": ["insulin", "diabetes"], "bm25": ["bm25"], "dense": ["hnsw"],
             "hnsw": ["hnsw"], "coffee": ["caffeine"], "volcano": ["volcano"], "tea": ["caffeine"]}
DOCS: dict[str, tuple[str, list[str]]] = {name: (text, _ENTITIES[name]) for name, text in _TEXTS.items()}


@dataclass
class Corpus:
    settings: Settings
    stores: Any
    embedder: HashEmbedder
    extractor: KnownExtractor
    doc_ids: dict[str, str] = field(default_factory=dict)  # name -> doc_id
    pending_chunk: str = ""


def build_corpus(tmp_path: Any, shards: int = 3, embedder: HashEmbedder | None = None,
                 keywords: MemKeywords | None = None, **retrieval: Any) -> Corpus:
    emb = embedder or HashEmbedder()
    meta, vecs, kw, graph = MemMeta(), MemVectors(emb.dim, shards), keywords or MemKeywords(), MemGraph()
    settings = Settings(home=tmp_path).replace(retrieval=retrieval) if retrieval else Settings(home=tmp_path)
    corpus = Corpus(settings, SimpleNamespace(meta=meta, vectors=vecs, keywords=kw, graph=graph, blobs=None), emb,
                    KnownExtractor(sorted({e for _, ents in DOCS.values() for e in ents})))
    for i, (name, (text, ents)) in enumerate(DOCS.items()):
        doc_id = f"d{i:020x}"
        corpus.doc_ids[name] = doc_id
        ch = Chunk.make(doc_id, 0, text, char_start=0, char_end=len(text), page_start=i % 3,
                        page_end=i % 3, entities=tuple((e, "TERM") for e in ents))
        vecs.add([ch], emb._vec(text)[None, :])
        kw.add([ch])
        graph.add([ch])
        meta.commit(DocumentRecord(doc_id, f"file:///{name}.txt", f"/data/{name}.txt", "h", "committed",
                                   title=name), [ch])
    # A chunk written to the indexes whose document was never committed (a crash mid-ingest): it matches
    # "aspirin" queries strongly but must never be returned.
    ghost = Chunk.make("d" + "f" * 20, 0, "aspirin aspirin aspirin inflammation aspirin", char_start=0, char_end=5)
    vecs.add([ghost], emb._vec(ghost.text)[None, :])
    kw.add([ghost])
    corpus.pending_chunk = ghost.chunk_id
    return corpus


@pytest.fixture
def corpus(tmp_path: Any) -> Corpus:
    return build_corpus(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(app) -> base URL``: runs an ASGI app with uvicorn in a thread on a loopback port."""
    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []

    def start(app: Any) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        servers.append((server, th))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, th in servers:
        server.should_exit = True
        th.join(timeout=5)


def make_openai_app(reply: Any, delay_s: float = 0.0) -> Any:
    """A minimal OpenAI-compatible ``/v1/chat/completions`` (plain and SSE streaming). ``reply`` is the
    assistant text, or a function of the request body returning it. Records the requests it got."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        if delay_s:
            await asyncio.sleep(delay_s)
        text = reply(body) if callable(reply) else reply
        if not body.get("stream"):
            return JSONResponse({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})

        async def events() -> Any:
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"
            for piece in re.findall(r"\S+\s*", text):
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture
def openai_app() -> Any:
    """The ``make_openai_app`` factory, as a fixture (test modules do not import conftest)."""
    return make_openai_app


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def corpus_factory(tmp_path: Any) -> Any:
    """``corpus_factory(**kw)`` -> a fresh Corpus; kw as for ``build_corpus``."""
    return lambda **kw: build_corpus(tmp_path, **kw)


@pytest.fixture
def doubles() -> SimpleNamespace:
    """The test-double classes, for tests that assemble their own."""
    return SimpleNamespace(HashEmbedder=HashEmbedder, MemKeywords=MemKeywords, MemVectors=MemVectors)


REAL_DOCS = {
    "aspirin.txt": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes.\n\n"
                   "Common side effects of aspirin include stomach bleeding and ulcers.\n",
    "volcano.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Volcanic ash from Mount Etna "
                  "can disrupt air travel across Europe.\n",
    "insulin.txt": "Insulin is a hormone made by the pancreas. It lets cells take up glucose from the blood. "
                   "Type 1 diabetes destroys the beta cells that make insulin.\n",
    "hnsw.txt": "HNSW is a graph index for approximate nearest neighbour search. It builds layers of proximity "
                "graphs and searches them greedily from the top layer down.\n",
}
GHOST_TEXT = "Mount Etna volcanic ash ash ash air travel disruption Europe"


@pytest.fixture(scope="session")
def real_home(tmp_path_factory: Any) -> Any:
    """A real index (default embedder, embedded stores) built by the lead's ingestion pipeline, plus one
    chunk written to the vector and keyword stores whose document was never committed."""
    from fanrag.engine import Engine
    from fanrag.ids import content_hash, document_id
    from fanrag.types import Document

    docs = tmp_path_factory.mktemp("docs")
    for name, text in REAL_DOCS.items():
        (docs / name).write_text(text)
    home = tmp_path_factory.mktemp("index")
    with Engine.open(home=home) as engine:
        summary = engine.ingest([docs])
        assert summary.ok == len(REAL_DOCS), summary.to_dict()
        uri = "file:///ghost.txt"
        ghost_doc = Document(document_id(uri), uri, "/ghost.txt", content_hash(GHOST_TEXT), GHOST_TEXT)
        ghost = Chunk.make(ghost_doc.doc_id, 0, GHOST_TEXT, char_start=0, char_end=len(GHOST_TEXT))
        engine.stores.meta.mark_pending([ghost_doc])
        engine.stores.vectors.add([ghost], engine.embedder.embed([GHOST_TEXT]))
        engine.stores.keywords.add([ghost])
    return SimpleNamespace(home=home, docs=docs, ghost=ghost.chunk_id)
