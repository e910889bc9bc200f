"""Typed, frozen settings. Sources, lowest to highest priority: defaults, ``$FANRAG_HOME/fanrag.toml``,
``FANRAG_<SECTION>__<FIELD>`` environment variables, explicit overrides. Every invalid value raises
ConfigError naming the field as ``section.field``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_HOME = ".fanrag"
CONFIG_FILE = "fanrag.toml"


def _check(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ConfigError(name, reason)


@dataclass(frozen=True)
class ChunkSettings:
    size: int = 256  # tokens, in the embedder's own tokenizer
    overlap: int = 32
    min_size: int = 16  # a trailing piece smaller than this is merged into the previous chunk

    def validate(self) -> None:
        _check(self.size >= 16, "size", "must be >= 16 tokens")
        _check(0 <= self.overlap < self.size // 2, "overlap", "must be >= 0 and < size/2")
        _check(0 <= self.min_size < self.size, "min_size", "must be >= 0 and < size")


@dataclass(frozen=True)
class EmbedSettings:
    backend: str = "onnx"  # onnx | sentence-transformers | http
    model: str = "all-MiniLM-L6-v2"  # onnx/st: a model directory or packaged name; http: the model name
    quantize: bool = True  # onnx: int8 MatMul weights, per channel
    threads: int = 0  # 0 = number of cores
    batch_size: int = 0  # inputs per forward pass (or HTTP request); 0 = the backend's own default
    gather: int = 512  # chunks gathered across documents and sorted by length before batching
    max_length: int = 256  # tokens per input, including special tokens
    url: str = ""  # http: base URL of an OpenAI-compatible server
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 5
    rate_limit_rpm: int = 0  # http: requests per minute, 0 = off
    rate_limit_tpm: int = 0  # http: (estimated) input tokens per minute, 0 = off
    rate_limit_redis: str = ""  # redis://... shares the limit between processes; empty = per process

    def validate(self) -> None:
        _check(self.backend in ("onnx", "sentence-transformers", "http"), "backend",
               "must be one of onnx, sentence-transformers, http")
        _check(self.threads >= 0, "threads", "must be >= 0")
        _check(0 <= self.batch_size <= 4096, "batch_size", "must be in 0..4096 (0: the backend's default)")
        _check(self.gather >= self.batch_size, "gather", "must be >= batch_size")
        _check(8 <= self.max_length <= 8192, "max_length", "must be in 8..8192")
        _check(self.backend != "http" or bool(self.url), "url", "is required when backend = http")
        _check(self.timeout_s > 0, "timeout_s", "must be > 0")
        _check(self.max_retries >= 0, "max_retries", "must be >= 0")
        _check(self.rate_limit_rpm >= 0 and self.rate_limit_tpm >= 0, "rate_limit_rpm", "must be >= 0")


@dataclass(frozen=True)
class HnswSettings:
    shards: int = 2
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128
    checkpoint_every: int = 50_000  # vectors added between HNSW checkpoints (the log makes each batch durable)

    def validate(self) -> None:
        _check(1 <= self.shards <= 256, "shards", "must be in 1..256")
        _check(2 <= self.m <= 128, "m", "must be in 2..128")
        _check(self.ef_construction >= self.m, "ef_construction", "must be >= m")
        _check(self.ef_search >= 1, "ef_search", "must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")


@dataclass(frozen=True)
class StoreSettings:
    """Which backend serves each store kind, as a URL. Empty = the embedded default under ``home``."""

    meta: str = ""
    vectors: str = ""
    keywords: str = ""
    blobs: str = ""
    graph: str = ""
    # A Redis URL: vector writes are buffered there and flushed to the vector store in large batches
    # (``?key=fanrag:vbuf&flush_batch=4096&flush_age=2``; see fanrag.stores.buffer). Empty = no buffer.
    vector_buffer: str = ""
    entity_extractor: str = "rules"  # rules | spacy | none

    def validate(self) -> None:
        _check(self.entity_extractor in ("rules", "spacy", "none"), "entity_extractor",
               "must be one of rules, spacy, none")


@dataclass(frozen=True)
class PipelineSettings:
    workers: int = 0  # load/chunk processes; 0 = number of cores
    executor: str = "local"  # local | ray | ray:ADDRESS | ray://HOST:PORT
    embed_actors: int = 0  # ray: embedder actors; 0 = one per 2 CPUs of the cluster
    pdf_page_threshold: int = 64  # PDFs with more pages fan out by page range
    pages_per_range: int = 32
    jsonl_docs_per_job: int = 256  # a JSONL collection fans out in slices of this many lines
    queue_depth: int = 8  # bounded queues between stages (in units of jobs / batches)
    write_batch: int = 512  # chunks per multi-store write
    max_file_mb: int = 512

    def validate(self) -> None:
        _check(self.workers >= 0, "workers", "must be >= 0")
        _check(self.embed_actors >= 0, "embed_actors", "must be >= 0")
        _check(self.pdf_page_threshold >= 1, "pdf_page_threshold", "must be >= 1")
        _check(self.pages_per_range >= 1, "pages_per_range", "must be >= 1")
        _check(self.jsonl_docs_per_job >= 1, "jsonl_docs_per_job", "must be >= 1")
        _check(self.queue_depth >= 1, "queue_depth", "must be >= 1")
        _check(self.write_batch >= 1, "write_batch", "must be >= 1")
        _check(self.max_file_mb >= 1, "max_file_mb", "must be >= 1")


# Branch weights that differ from 1.0 by default. The graph branch at full weight cost 0.04 nDCG@10 on
# SciFact (0.703 -> 0.664, hybrid vs all branches) and 0.25 keeps it within noise of dense + bm25 while it
# still contributes entity matches on corpora with named things; `fanrag tune` finds a corpus's own.
DEFAULT_WEIGHTS: dict[str, float] = {"graph": 0.25}


@dataclass(frozen=True)
class RetrievalSettings:
    rrf_k: int = 60
    weights: dict[str, float] = field(default_factory=dict)  # branch -> weight; merged over DEFAULT_WEIGHTS
    branches: tuple[str, ...] = ("dense", "bm25", "subqueries", "graph")
    branch_k: int = 100  # candidates each branch returns
    candidates: int = 20  # fused candidates passed to rerank
    top_n: int = 5  # chunks in the final context
    branch_timeout_s: float = 2.0
    transform: str = "rules"  # rules | llm | none
    prf_terms: int = 8
    prf_docs: int = 5
    transform_timeout_s: float = 1.5  # transform = llm: falls back to rules after this long

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", {**DEFAULT_WEIGHTS, **self.weights})

    def validate(self) -> None:
        _check(self.rrf_k >= 0, "rrf_k", "must be >= 0")
        for name, w in self.weights.items():
            _check(isinstance(w, int | float) and w >= 0, f"weights.{name}", "must be a number >= 0")
        known = {"dense", "bm25", "subqueries", "graph"}
        for b in self.branches:
            _check(b in known, "branches", f"unknown branch {b!r}; known: {sorted(known)}")
        _check(self.branch_k >= 1, "branch_k", "must be >= 1")
        _check(self.candidates >= 1, "candidates", "must be >= 1")
        _check(1 <= self.top_n <= self.candidates, "top_n", "must be in 1..candidates")
        _check(self.branch_timeout_s > 0, "branch_timeout_s", "must be > 0")
        _check(self.transform in ("rules", "llm", "none"), "transform", "must be one of rules, llm, none")
        _check(self.transform_timeout_s > 0, "transform_timeout_s", "must be > 0")


@dataclass(frozen=True)
class RerankSettings:
    backend: str = "none"  # none | cross-encoder | cohere | tei
    model: str = ""  # cross-encoder: local directory or model id; http: model name
    url: str = ""
    api_key_env: str = "COHERE_API_KEY"
    batch_size: int = 32
    cache_size: int = 10_000
    timeout_s: float = 10.0

    def validate(self) -> None:
        _check(self.backend in ("none", "cross-encoder", "cohere", "tei"), "backend",
               "must be one of none, cross-encoder, cohere, tei")
        _check(self.backend != "cross-encoder" or bool(self.model), "model", "is required for cross-encoder")
        _check(self.backend not in ("cohere", "tei") or bool(self.url), "url", "is required for HTTP rerank")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.cache_size >= 0, "cache_size", "must be >= 0")


@dataclass(frozen=True)
class LLMSettings:
    backend: str = "extractive"  # extractive | openai | llama-cpp
    url: str = ""  # openai: base URL, e.g. http://127.0.0.1:11434/v1
    model: str = ""
    gguf: str = ""  # llama-cpp: path to a GGUF file
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_tokens: int = 512
    temperature: float = 0.0
    system_prompt: str = ""  # empty = the built-in grounded, cited prompt

    def validate(self) -> None:
        _check(self.backend in ("extractive", "openai", "llama-cpp"), "backend",
               "must be one of extractive, openai, llama-cpp")
        _check(self.backend != "openai" or bool(self.url), "url", "is required for backend openai")
        _check(self.backend != "llama-cpp" or bool(self.gguf), "gguf", "is required for backend llama-cpp")
        _check(self.timeout_s > 0, "timeout_s", "must be > 0")
        _check(self.max_tokens >= 1, "max_tokens", "must be >= 1")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str = ""  # bearer token for write endpoints; empty = writes disabled unless allow_anonymous_writes
    ingest_root: str = ""  # POST /ingest may read paths under this directory only
    max_upload_mb: int = 64

    def validate(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be in 0..65535")
        _check(self.max_upload_mb >= 1, "max_upload_mb", "must be >= 1")


_SECTIONS: dict[str, type] = {
    "chunk": ChunkSettings,
    "embed": EmbedSettings,
    "hnsw": HnswSettings,
    "stores": StoreSettings,
    "pipeline": PipelineSettings,
    "retrieval": RetrievalSettings,
    "rerank": RerankSettings,
    "llm": LLMSettings,
    "server": ServerSettings,
}


@dataclass(frozen=True)
class Settings:
    home: Path = Path(DEFAULT_HOME)
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    hnsw: HnswSettings = field(default_factory=HnswSettings)
    stores: StoreSettings = field(default_factory=StoreSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))
        for name in _SECTIONS:
            section = getattr(self, name)
            try:
                section.validate()
            except ConfigError as exc:
                raise ConfigError(f"{name}.{exc.field}", exc.reason) from None

    @property
    def cores(self) -> int:
        return os.cpu_count() or 1

    def replace(self, **sections: dict[str, Any] | Any) -> Settings:
        """A copy with some fields changed: ``s.replace(chunk={"size": 128}, home="x")``."""
        updates: dict[str, Any] = {}
        for name, value in sections.items():
            if name in _SECTIONS and isinstance(value, dict):
                updates[name] = _build(_SECTIONS[name], value, name, base=getattr(self, name))
            else:
                updates[name] = value
        return dataclasses.replace(self, **updates)

    @classmethod
    def load(cls, home: str | Path | None = None, overrides: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> Settings:
        """Defaults < config file < environment < overrides."""
        env = dict(os.environ if env is None else env)
        home = Path(home or env.get("FANRAG_HOME") or DEFAULT_HOME)
        merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        cfg = home / CONFIG_FILE
        if cfg.is_file():
            try:
                data = tomllib.loads(cfg.read_text("utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(cfg), f"not valid TOML: {exc}") from None
            _merge(merged, data, str(cfg))
        _merge(merged, _from_env(env), "environment")
        _merge(merged, overrides or {}, "overrides")
        sections = {name: _build(cls_, merged[name], name) for name, cls_ in _SECTIONS.items()}
        return cls(home=home, **sections)


def _merge(into: dict[str, dict[str, Any]], data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in into:
            raise ConfigError(section, f"unknown section (from {origin}); known: {sorted(into)}")
        if not isinstance(values, dict):
            raise ConfigError(section, f"must be a table of settings (from {origin})")
        into[section].update(values)


# Aliases for the URL-style variables the docs show (FANRAG_VECTORS=pgvector://...).
_ENV_ALIASES = {f"FANRAG_{k.upper()}": ("stores", k)
                for k in ("meta", "vectors", "keywords", "blobs", "graph", "vector_buffer")}


def _from_env(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if key in _ENV_ALIASES:
            section, name = _ENV_ALIASES[key]
        elif key.startswith("FANRAG_") and "__" in key:
            section, _, name = key[len("FANRAG_"):].lower().partition("__")
        else:
            continue
        out.setdefault(section, {})[name] = value
    return out


def _build(cls: type, values: dict[str, Any], section: str, base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}", f"unknown setting; known: {sorted(fields)}")
        kwargs[key] = _coerce(raw, hints[key], f"{section}.{key}")
    obj = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    try:
        obj.validate()
    except ConfigError as exc:
        raise ConfigError(f"{section}.{exc.field}", exc.reason) from None
    return obj


def _coerce(raw: Any, hint: Any, name: str) -> Any:
    """Turn env strings and TOML values into the annotated type, or name the field that is wrong."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            if not isinstance(raw, str | int | float):
                raise ValueError(raw)
            return str(raw)
        if origin is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(x).strip() for x in items if str(x).strip())
        if origin is dict:
            if isinstance(raw, str):  # "dense=1,bm25=0.5"
                pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
                raw = {k.strip(): v for k, v in pairs}
            return {str(k): float(v) for k, v in dict(raw).items()}
        if isinstance(hint, types.UnionType):
            return raw
    except (TypeError, ValueError):
        raise ConfigError(name, f"cannot read {raw!r} as {getattr(hint, '__name__', hint)}") from None
    return raw
