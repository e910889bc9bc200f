"""Typed, frozen settings, read with pydantic-settings.

Sources, lowest to highest priority: the defaults declared below, ``$FANRAG_HOME/fanrag.toml`` (or
``home/fanrag.toml``), ``FANRAG_<SECTION>__<FIELD>`` environment variables (plus the store URL aliases
``FANRAG_META``, ``FANRAG_VECTORS``, ...), explicit overrides. Layers merge field by field (a table in the
file and one variable for the same section both count).

Each field declares its type and its constraints (``Literal`` options, ``Field(ge=...)``); a rule over
several fields is a validator on the later one (``chunk.overlap < chunk.size / 2``), so its error names
that field. Whatever the source (file, environment, overrides, ``replace``, a section built directly), an
invalid value raises ConfigError naming the field as ``section.field`` (``retrieval.weights.graph`` for a
table entry).

Sections and ``Settings`` are frozen, slotted pydantic *dataclasses* rather than models: they stay
``dataclasses.replace``-able and hashable like any dataclass, and the Celery codec, which only rebuilds
fanrag's dataclasses, carries them to workers. The file and environment layers are read by
pydantic-settings in ``_settings_sources.py``, imported by ``load`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.dataclasses import dataclass

from .errors import ConfigError
from .types import BranchName

DEFAULT_HOME = ".fanrag"
CONFIG_FILE = "fanrag.toml"
ENV_PREFIX = "FANRAG_"
ENV_DELIMITER = "__"

T = TypeVar("T")

# extra="forbid": an unknown key is an error, not ignored; validate_default: cross-field rules also see
# defaults (backend = "http" with the default empty url).
_CONFIG = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)


@typing.dataclass_transform(frozen_default=True, field_specifiers=(field,))
def _frozen(cls: type[T]) -> type[T]:
    """A frozen, slotted pydantic dataclass whose constructor raises ConfigError naming the field."""
    built = dataclass(frozen=True, slots=True, config=_CONFIG)(cls)
    init = built.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc, _SECTION_NAMES.get(type(self), "")) from None

    built.__init__ = __init__  # type: ignore[method-assign]
    return typing.cast(type[T], built)


def _rule(field: str, reason: str, ok: Callable[[Any, dict[str, Any]], bool]) -> Any:
    """A validator of ``field`` for a rule over earlier fields: ``ok(value, earlier_values)``."""

    def check(cls: type, value: Any, info: ValidationInfo) -> Any:
        try:
            passed = ok(value, info.data)
        except KeyError:  # an earlier field is invalid itself: that error is the one to report
            return value
        if not passed:
            raise ValueError(reason)
        return value

    return field_validator(field)(classmethod(check))  # type: ignore[arg-type]


def _required_for(field: str, *backends: str) -> Any:
    """A validator: ``field`` must be set when ``backend`` (declared before it) is one of ``backends``."""
    reason = f"is required when backend = {' or '.join(backends)}"
    return _rule(field, reason, lambda v, d: d["backend"] not in backends or bool(v))


def _comma_separated(value: Any) -> Any:
    """``"dense,bm25"`` (an environment variable) -> ("dense", "bm25"); lists pass through."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _name_value_pairs(value: Any) -> Any:
    """``"dense=1,bm25=0.5"`` (an environment variable) -> {"dense": "1", "bm25": "0.5"}; tables pass."""
    if not isinstance(value, str):
        return value
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("expected name=weight pairs, e.g. dense=1,bm25=0.5")
    return {name.strip(): weight.strip() for name, weight in pairs}


# Lists and tables in environment variables are comma-separated, not JSON.
Branches = Annotated[tuple[BranchName, ...], BeforeValidator(_comma_separated)]
Weights = Annotated[dict[str, Annotated[float, Field(ge=0)]], BeforeValidator(_name_value_pairs)]


@_frozen
class ChunkSettings:
    size: Annotated[int, Field(ge=16)] = 256  # tokens, in the embedder's own tokenizer
    overlap: NonNegativeInt = 32
    min_size: NonNegativeInt = 16  # a trailing piece smaller than this is merged into the previous chunk
    # Tokens kept for a chunk's header (title › section path, page, a cut table's column names), embedded
    # and indexed with it; the text gets size minus this. 0 = no headers.
    header_tokens: Annotated[int, Field(ge=0, le=128)] = 32

    _overlap = _rule("overlap", "must be < size/2", lambda v, d: v < d["size"] // 2)
    _min_size = _rule("min_size", "must be < size", lambda v, d: v < d["size"])


@_frozen
class EmbedSettings:
    backend: Literal["onnx", "sentence-transformers", "http"] = "onnx"
    model: str = "all-MiniLM-L6-v2"  # onnx/st: a model directory or packaged name; http: the model name
    quantize: bool = True  # onnx: int8 MatMul weights, per channel
    threads: NonNegativeInt = 0  # 0 = number of cores
    # Inputs per forward pass (or HTTP request); 0 = the backend's own default.
    batch_size: Annotated[int, Field(ge=0, le=4096)] = 0
    gather: int = 512  # chunks gathered across documents and sorted by length before batching
    max_length: Annotated[int, Field(ge=8, le=8192)] = 256  # tokens per input, including special tokens
    url: str = ""  # http: base URL of an OpenAI-compatible server
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: PositiveFloat = 30.0
    max_retries: NonNegativeInt = 5
    rate_limit_rpm: NonNegativeInt = 0  # http: requests per minute, 0 = off
    rate_limit_tpm: NonNegativeInt = 0  # http: (estimated) input tokens per minute, 0 = off
    rate_limit_redis: str = ""  # redis://... shares the limit between processes; empty = per process
    # Keep each chunk's vector in the metadata store by (embedder, text hash): re-ingesting a changed document
    # embeds only the chunks whose text changed (see embed/cache.py).
    cache: bool = True

    _gather = _rule("gather", "must be >= batch_size", lambda v, d: v >= d["batch_size"])
    _url = _required_for("url", "http")


@_frozen
class HnswSettings:
    shards: Annotated[int, Field(ge=1, le=256)] = 2
    m: Annotated[int, Field(ge=2, le=128)] = 16
    ef_construction: int = 200
    ef_search: PositiveInt = 128
    # Vectors added between HNSW checkpoints (the log makes each batch durable).
    checkpoint_every: PositiveInt = 50_000

    _ef_construction = _rule("ef_construction", "must be >= m", lambda v, d: v >= d["m"])


@_frozen
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
    entity_extractor: Literal["rules", "spacy", "none"] = "rules"


@_frozen
class PipelineSettings:
    workers: NonNegativeInt = 0  # load/chunk processes; 0 = number of cores
    executor: str = "local"  # local | ray | ray:ADDRESS | ray://HOST:PORT
    embed_actors: NonNegativeInt = 0  # ray: embedder actors; 0 = one per 2 CPUs of the cluster
    pdf_page_threshold: PositiveInt = 64  # PDFs with more pages fan out by page range
    pages_per_range: PositiveInt = 32
    jsonl_docs_per_job: PositiveInt = 256  # a JSONL collection fans out in slices of this many lines
    queue_depth: PositiveInt = 8  # bounded queues between stages (in units of jobs / batches)
    write_batch: PositiveInt = 512  # chunks per multi-store write
    max_file_mb: PositiveInt = 512


@_frozen
class IngestSettings:
    """Bounds on what loading one source may cost. A hostile or broken file (a zip bomb, a PDF whose page
    tree claims a million pages, markup nested 100,000 deep, a 1 GB JSONL line) fails alone, before the
    expensive step, with a LimitExceeded naming the file and the setting; the other sources go on."""

    max_pages: PositiveInt = 100_000  # PDF pages, counted after checking the page tree against the file
    max_stream_mb: PositiveInt = 64  # PDF: one compressed (Flate) stream, decoded
    max_ratio: Annotated[int, Field(ge=2)] = 200  # a DOCX entry or PDF stream: decoded / compressed size
    max_zip_entries: PositiveInt = 10_000  # DOCX: entries in the archive
    max_unpacked_mb: PositiveInt = 256  # DOCX: all entries, uncompressed
    max_xml_mb: PositiveInt = 64  # DOCX: one XML part (parsed in memory, at several times its size)
    max_html_mb: PositiveInt = 64  # HTML: the page
    max_html_depth: Annotated[int, Field(ge=16)] = 512  # HTML: element nesting (parsing is quadratic in it)
    max_line_mb: PositiveInt = 16  # JSONL: one line (one entry)


# List weights that differ from 1.0 by default, chosen across every dev set together (SciFact, ArguAna,
# TAT-QA, a multi-hop Wikipedia set, a Factbook set; bench/results/quality.json). With score fusion the
# graph list at 0.5, for entity questions only (retrieval.graph_max_entities), lifted every set (+0.17
# nDCG@10 on Factbook lookups); the PRF list never helped all of them together, so its search is off
# (prf_terms = 0); sub-questions count half, as a rephrasing of the query rather than a new one; the second
# hop counts half too: at 1.0 it lifted multi-hop recall most but cost Factbook lookups and comparisons
# (bench/results/multihop.json), at 0.5 neither set lost.
DEFAULT_WEIGHTS: dict[str, float] = {BranchName.GRAPH.value: 0.5, BranchName.SUBQUERIES.value: 0.5,
                                     BranchName.HOP.value: 0.5, "prf": 0.25}


@_frozen
class RetrievalSettings:
    # How the branches' lists merge (retrieve/fusion.py): "score" (z-scored CombSUM) or "rrf".
    fusion: Literal["score", "rrf"] = "score"
    rrf_k: NonNegativeInt = 60
    # Consecutive chunks of one document that fusion credits as one place (0 = the whole document).
    fusion_window: NonNegativeInt = 4
    # The graph branch runs for entity questions: a query naming more known entities than this (a pasted
    # passage, a long argument) gets no graph search.
    graph_max_entities: NonNegativeInt = 8
    # Ranked-list kind -> weight, merged over DEFAULT_WEIGHTS. Keys are the branches plus "prf" (the bm25
    # branch's expanded query), so they stay strings.
    weights: Weights = field(default_factory=dict)
    branches: Branches = tuple(BranchName)
    branch_k: PositiveInt = 100  # candidates each branch returns
    candidates: PositiveInt = 20  # fused candidates passed to rerank
    top_n: PositiveInt = 5  # chunks in the final context
    branch_timeout_s: PositiveFloat = 2.0
    transform: Literal["rules", "llm", "none"] = "rules"
    prf_terms: NonNegativeInt = 0  # > 0 (and prf_docs > 0): an RM3 feedback search in the bm25 branch
    prf_docs: NonNegativeInt = 5
    transform_timeout_s: PositiveFloat = 1.5  # transform = llm: falls back to rules after this long

    _top_n = _rule("top_n", "must be in 1..candidates", lambda v, d: v <= d["candidates"])

    @field_validator("weights")
    @classmethod
    def _default_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_WEIGHTS, **weights}


@_frozen
class RerankSettings:
    backend: Literal["none", "cross-encoder", "cohere", "tei"] = "none"
    model: str = ""  # cross-encoder: local directory or model id; http: model name
    url: str = ""
    api_key_env: str = "COHERE_API_KEY"
    batch_size: PositiveInt = 32
    cache_size: NonNegativeInt = 10_000
    timeout_s: PositiveFloat = 10.0

    _model = _required_for("model", "cross-encoder")
    _url = _required_for("url", "cohere", "tei")


@_frozen
class LLMSettings:
    backend: Literal["extractive", "openai", "llama-cpp"] = "extractive"
    url: str = ""  # openai: base URL, e.g. http://127.0.0.1:11434/v1
    model: str = ""
    gguf: str = ""  # llama-cpp: path to a GGUF file
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: PositiveFloat = 60.0
    max_tokens: PositiveInt = 512
    temperature: NonNegativeFloat = 0.0
    system_prompt: str = ""  # empty = the built-in grounded, cited prompt
    check_support: bool = True  # check each answer sentence against the sources it cites (Answer.unsupported)
    # extractive answer: passages embedded per question to pick them by meaning, each about the cost of one
    # query embedding; 0 = by term overlap only (docs/llm.md)
    extractive_embed: NonNegativeInt = 6

    _url = _required_for("url", "openai")
    _gguf = _required_for("gguf", "llama-cpp")


@_frozen
class ServerSettings:
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    token: str = ""  # bearer token for the write endpoints (ingest, delete); empty = they answer 403
    # Bearer token for the read endpoints (query, documents, metrics); empty = open to whoever reaches the
    # port (the default binds to 127.0.0.1). The write token is accepted for reads too.
    read_token: str = ""
    ingest_root: str = ""  # POST /ingest may read paths under this directory only
    max_upload_mb: PositiveInt = 64


@_frozen
class Settings:
    home: Path = Path(DEFAULT_HOME)
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    hnsw: HnswSettings = field(default_factory=HnswSettings)
    stores: StoreSettings = field(default_factory=StoreSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    @property
    def cores(self) -> int:
        """CPUs this process may run on (see ``available_cpus``)."""
        return available_cpus()

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed: ``s.replace(chunk={"size": 128}, home="x")``; a table updates
        the fields it names and keeps the section's others."""
        merged: dict[str, Any] = dict(changes)
        for name, value in changes.items():
            if isinstance(value, Mapping) and name in _SECTIONS:
                merged[name] = {**_fields(getattr(self, name)), **value}
        return dataclasses.replace(self, **merged)

    @classmethod
    def load(cls, home: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> Settings:
        """Defaults < config file < environment (``os.environ`` unless ``env`` is given) < overrides."""
        from ._settings_sources import read_env, read_file  # pydantic-settings, only when settings are read

        env = os.environ if env is None else env
        home = Path(home or env.get("FANRAG_HOME") or DEFAULT_HOME)
        merged: dict[str, Any] = {}
        for layer in (read_file(home / CONFIG_FILE), read_env(env), overrides or {}):
            _merge(merged, layer)
        for name in merged:
            if name not in _SECTIONS:
                raise ConfigError(name, f"unknown section; known: {', '.join(_SECTIONS)}")
        return cls(home=home, **merged)


_SECTIONS: dict[str, type] = {n: t for n, t in typing.get_type_hints(Settings).items() if n != "home"}
_SECTION_NAMES: dict[type, str] = {t: n for n, t in _SECTIONS.items()}


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Merge ``layer`` over ``into`` table by table, so each layer overrides only the fields it names."""
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _config_error(exc: ValidationError, section: str = "") -> ConfigError:
    """The first error as ConfigError: ``section.field`` (list indexes dropped) and a one-line reason."""
    err = exc.errors(include_url=False)[0]
    path = [section] if section else []
    path += [str(part) for part in err["loc"] if not isinstance(part, int)]
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        owner = _SECTIONS.get(path[0], Settings) if len(path) > 1 else Settings
        known = ", ".join(f.name for f in dataclasses.fields(owner))
        return ConfigError(".".join(path), f"unknown setting; known: {known}")
    return ConfigError(".".join(path) or "settings", str(err["msg"]).removeprefix("Value error, "))


# -- CPUs ----------------------------------------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup v2 CPU quota (``cpu.max``)
    of its cgroup and every parent. ``os.cpu_count()`` counts the machine's CPUs, which a container or
    ``taskset`` may not let us use: as many workers as that would fight over the few we have."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks (macOS, Windows)
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_quota(root: Path, proc_cgroup: Path) -> int | None:
    """The smallest ``cpu.max`` quota from our cgroup up to the root, in CPUs rounded up; None = none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)  # the v2 entry: "0::/path"
    if own is None:
        return None
    folder = root / own.lstrip("/")
    limits = (_cpu_max(d) for d in (folder, *folder.parents) if d.is_relative_to(root))
    quotas = [q for q in limits if q is not None]
    return min(quotas, default=None)


def _cpu_max(folder: Path) -> int | None:
    """``cpu.max`` is "QUOTA PERIOD" (µs) or "max PERIOD"; 150000 100000 = 1.5 CPUs -> 2."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None
