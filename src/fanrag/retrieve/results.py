"""What retrieval and querying return. ``QueryResult.to_dict`` is the JSON shape of ``fanrag query --json``
and of ``POST /query``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..stores.base import ScoredId
from ..types import Hit
from .fusion import rrf
from .generate import Answer, Citation
from .grounding import SentenceSupport, unsupported
from .trace import Span
from .transform import TransformResult

STATUS_OK = "ok"
STATUS_TIMEOUT = "timeout"


def doc_of(chunk_id: str) -> str:
    """The document id inside a chunk id (``{doc_id}-{position}-{hash}``, see ``fanrag.ids.chunk_id``)."""
    return chunk_id.rsplit("-", 2)[0]


@dataclass(frozen=True, slots=True)
class BranchTiming:
    """When a branch ran, in ms from the start of the query; status is ok, timeout, error: ... or skipped: ..."""

    start_ms: float
    end_ms: float
    status: str

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms

    def to_dict(self) -> dict[str, Any]:
        return {"start_ms": round(self.start_ms, 3), "end_ms": round(self.end_ms, 3), "status": self.status}


@dataclass(frozen=True, slots=True)
class RankedList:
    """One ranked list a branch produced. ``kind`` picks the fusion weight (dense, bm25, prf, subqueries,
    graph); ``query`` is the text that was searched."""

    branch: str
    kind: str
    query: str
    hits: list[ScoredId]


@dataclass(frozen=True)
class RetrievalResult:
    query: str
    transform: TransformResult
    hits: list[Hit]  # fused, committed only, best first; at most retrieval.candidates
    lists: list[RankedList]
    branches: dict[str, BranchTiming]
    parallel: bool = True
    transform_ms: float = 0.0
    fanout_ms: float = 0.0
    fusion_ms: float = 0.0
    fetch_ms: float = 0.0
    total_ms: float = 0.0
    trace: list[str] = field(default_factory=list)  # transform trace plus what the branches added (PRF)
    spans: list[Span] = field(default_factory=list)  # when each step ran (trace.py), up to the fetch

    def per_branch(self, k: int = 60) -> dict[str, list[str]]:
        """Each branch's ranking as chunk ids; a branch with several lists is fused with plain RRF."""
        out: dict[str, list[str]] = {}
        for name in self.branches:
            mine = [("x", [h.chunk_id for h in rl.hits]) for rl in self.lists if rl.branch == name]
            if len(mine) == 1:
                out[name] = mine[0][1]
            elif mine:
                out[name] = [cid for cid, _ in rrf(mine, k=k)]
        return out

    def per_branch_docs(self) -> dict[str, list[str]]:
        """Each branch's ranking as document ids (first occurrence of each document)."""
        return {name: list(dict.fromkeys(doc_of(c) for c in ids)) for name, ids in self.per_branch().items()}

    def doc_ids(self) -> list[str]:
        """Fused ranking as document ids, first occurrence of each."""
        return list(dict.fromkeys(h.doc_id for h in self.hits))

    @property
    def slowest_branch_ms(self) -> float:
        return max((t.ms for t in self.branches.values()), default=0.0)

    @property
    def branch_sum_ms(self) -> float:
        return sum(t.ms for t in self.branches.values())


@dataclass(frozen=True, slots=True)
class RerankInfo:
    """What the rerank step did: ``status`` is ok, skipped: why, timeout: ... or error: ... (the fused
    order is kept on anything but ok); ``scored``/``cached`` count the candidates scored now / from cache."""

    backend: str
    status: str
    model: str = ""
    scored: int = 0
    cached: int = 0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend}
        if self.backend != "none":
            out["model"] = self.model
        out["status"] = self.status
        if self.ok:
            out |= {"scored": self.scored, "cached": self.cached}
        return out


def hit_dict(hit: Hit) -> dict[str, Any]:
    return {"chunk_id": hit.chunk_id, "doc_id": hit.doc_id, "source": hit.source, "page": hit.page,
            "score": round(float(hit.score), 6), "text": hit.text}


@dataclass(frozen=True)
class QueryResult:
    query: str
    hits: list[Hit]  # the final top_n, most relevant first
    retrieval: RetrievalResult
    rerank: RerankInfo
    candidates: list[Hit] = field(default_factory=list)  # every candidate in final (reranked) order
    answer: str = ""  # "" when generation was not asked for
    citations: list[Citation] = field(default_factory=list)  # the [n] of the answer, mapped to chunks
    generator: str = ""  # who wrote the answer: extractive, openai, llama-cpp ("" = not generated)
    extractive: bool = False  # True when the answer quotes the sources (no language model)
    support: list[SentenceSupport] = field(default_factory=list)  # a model's sentences, checked (Answer.support)
    declined: bool = False  # the model answered that the sources do not contain the answer
    rerank_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0
    spans: list[Span] = field(default_factory=list)  # every step, shards included (trace.py)

    @classmethod
    def build(cls, answer: Answer | None, **kw: Any) -> QueryResult:
        if answer is None:
            return cls(**kw)
        return cls(answer=answer.text, citations=list(answer.citations), generator=answer.backend,
                   extractive=answer.extractive, support=list(answer.support), declined=answer.declined, **kw)

    @property
    def unsupported(self) -> list[int]:
        """Indices of the answer's sentences that no cited source supports (see ``Answer.unsupported``)."""
        return unsupported(self.support)

    def grounding(self) -> dict[str, Any] | None:
        """How a model's answer stands on its sources (None for quotes and when nothing was generated)."""
        if not self.generator or self.extractive:
            return None
        return {"checked": bool(self.support), "declined": self.declined, "unsupported": self.unsupported,
                "sentences": [s.to_dict() for s in self.support]}

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape; ``grounding`` is there only for a model's answer (see ``grounding``)."""
        r = self.retrieval
        grounding = self.grounding()
        return {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            **({"grounding": grounding} if grounding is not None else {}),
            "hits": [hit_dict(h) for h in self.hits],
            "timings": {
                "branches": {name: t.to_dict() for name, t in r.branches.items()},
                "transform_ms": round(r.transform_ms, 3),
                "fanout_ms": round(r.fanout_ms, 3),
                "fusion_ms": round(r.fusion_ms, 3),
                "fetch_ms": round(r.fetch_ms, 3),
                "rerank_ms": round(self.rerank_ms, 3),
                "generate_ms": round(self.generate_ms, 3),
                "total_ms": round(self.total_ms, 3),
            },
            "spans": [s.to_dict() for s in self.spans],
            "rerank": self.rerank.to_dict(),
            "transform": {
                "normalized": r.transform.normalized,
                "subqueries": list(r.transform.subqueries),
                "rewrites": list(r.transform.rewrites),
                "trace": list(r.trace),
            },
        }
