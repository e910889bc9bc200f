"""Retrieval and answers: query transformation, concurrent fan-out, RRF, rerank, lost-in-the-middle
ordering and cited answers. ``Retriever`` is the entry point."""

from .retriever import BRANCHES, Retriever, merge_shards
from .fusion import rrf
from .generate import (
    Answer,
    Citation,
    ExtractiveGenerator,
    Generator,
    LlamaCppGenerator,
    OpenAIGenerator,
    create_generator,
    parse_citations,
)
from .order import lost_in_the_middle
from .rerank import (
    CachedReranker,
    CohereReranker,
    CrossEncoderReranker,
    Reranker,
    TEIReranker,
    create_reranker,
)
from .results import BranchTiming, QueryResult, RankedList, RetrievalResult
from .transform import (
    LLMTransformer,
    QueryTransformer,
    RulesTransformer,
    TransformResult,
    create_transformer,
    decompose,
    prf_expand,
)

__all__ = [
    "BRANCHES",
    "Answer",
    "BranchTiming",
    "CachedReranker",
    "Citation",
    "CohereReranker",
    "CrossEncoderReranker",
    "ExtractiveGenerator",
    "Generator",
    "LLMTransformer",
    "LlamaCppGenerator",
    "OpenAIGenerator",
    "QueryResult",
    "QueryTransformer",
    "RankedList",
    "Reranker",
    "RetrievalResult",
    "Retriever",
    "RulesTransformer",
    "TEIReranker",
    "TransformResult",
    "create_generator",
    "create_reranker",
    "create_transformer",
    "decompose",
    "lost_in_the_middle",
    "merge_shards",
    "parse_citations",
    "prf_expand",
    "rrf",
]
