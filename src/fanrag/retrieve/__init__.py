"""Retrieval and answers: query transformation, concurrent fan-out over the branches, RRF, rerank,
lost-in-the-middle ordering and cited answers. ``fanrag.Engine.retriever`` gives the ``Retriever``."""

from ..stores.merge import merge_shards
from .branches import BM25Branch, Branch, BranchOutput, DenseBranch, GraphBranch, SubqueriesBranch, VectorSearch
from .factory import GENERATORS, RERANKERS, TRANSFORMERS, create_generator, create_reranker, create_transformer
from .fusion import rrf
from .generate import (
    Answer,
    Citation,
    ExtractiveGenerator,
    Generator,
    LlamaCppGenerator,
    OpenAIGenerator,
    parse_citations,
)
from .order import lost_in_the_middle
from .rerank import CachedReranker, CohereReranker, CrossEncoderReranker, Reranker, TEIReranker
from .results import BranchTiming, QueryResult, RankedList, RerankInfo, RetrievalResult
from .retriever import BRANCHES, Retriever
from .transform import (
    LLMTransformer,
    QueryTransformer,
    RulesTransformer,
    TransformResult,
    decompose,
    prf_expand,
)

__all__ = [
    "BRANCHES", "GENERATORS", "RERANKERS", "TRANSFORMERS", "Answer", "BM25Branch", "Branch", "BranchOutput",
    "BranchTiming", "CachedReranker", "Citation", "CohereReranker", "CrossEncoderReranker", "DenseBranch",
    "ExtractiveGenerator", "Generator", "GraphBranch", "LLMTransformer", "LlamaCppGenerator", "OpenAIGenerator",
    "QueryResult", "QueryTransformer", "RankedList", "RerankInfo", "Reranker", "RetrievalResult", "Retriever",
    "RulesTransformer", "SubqueriesBranch", "TEIReranker", "TransformResult", "VectorSearch", "create_generator",
    "create_reranker", "create_transformer", "decompose", "lost_in_the_middle", "merge_shards",
    "parse_citations", "prf_expand", "rrf",
]
