"""Tune the fusion (RRF k, dense/bm25 weights, candidate depth) on half of a BEIR test set, and report
the choice on the other half only, next to the current settings on that same half.

Every query runs through the retriever once, at the deepest candidate depth of the grid; its branch
lists are cached and each grid point re-fuses them in Python with the retriever's own ``Fusion`` (the
configured method, ``score`` or ``rrf``; ``rrf_k`` matters to ``rrf`` only).
A smaller depth is the deep list cut to that length: the same ranking a shallower search returns, up
to HNSW's approximation, so the whole grid costs one retrieval per query.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..retrieve.fusion import Fusion
from ..retrieve.results import doc_of
from ..settings import CONFIG_FILE
from .beir import BeirDataset, corpus_ids, load_beir
from .metrics import evaluate_rankings
from .runner import external_map, limit_dataset

RRF_KS = (10, 20, 40, 60, 100)
# (dense weight, bm25 weight); the bm25 branch's second list (the PRF-expanded query, kind "prf") takes the
# bm25 weight too, so "bm25" means the whole branch. Subqueries keep their configured weight.
WEIGHT_PAIRS = ((1.0, 1.0), (1.0, 0.75), (1.0, 0.5), (1.0, 0.25), (0.75, 1.0), (0.5, 1.0), (0.25, 1.0))
# the graph branch is the noisiest (entity co-occurrence): on SciFact it costs nDCG at weight 1
GRAPH_WEIGHTS = (1.0, 0.5, 0.0)
DEPTHS = (50, 100, 200)
METRIC = "ndcg@10"

BranchLists = list[tuple[str, list[tuple[str, float]]]]  # (list kind, (chunk id, score) best first)


@dataclass(frozen=True)
class FusionParams:
    rrf_k: int
    branch_k: int
    weights: tuple[tuple[str, float], ...]  # sorted (kind, weight): hashable, printable
    method: str = "score"
    window: int = 4

    @classmethod
    def of(cls, rrf_k: int, branch_k: int, weights: Mapping[str, float], method: str = "score",
           window: int = 4) -> FusionParams:
        return cls(rrf_k, branch_k, tuple(sorted((k, float(w)) for k, w in weights.items())), method, window)

    def to_dict(self) -> dict[str, Any]:
        return {"rrf_k": self.rrf_k, "branch_k": self.branch_k, "weights": dict(self.weights)}


@dataclass
class TuneReport:
    seed: int
    n_tune: int
    n_test: int
    grid_size: int
    best: FusionParams
    default: FusionParams
    tune_scores: dict[str, float]  # "best"/"default" -> nDCG@10 on the tuning half
    test_scores: dict[str, float]  # "best"/"default" -> nDCG@10 on the test half: the numbers to trust
    retrieve_s: float = 0.0
    grid_s: float = 0.0
    top: list[tuple[FusionParams, float]] = field(default_factory=list)  # best few on the tuning half

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "n_tune": self.n_tune, "n_test": self.n_test, "grid_size": self.grid_size,
                "metric": METRIC, "best": self.best.to_dict(), "default": self.default.to_dict(),
                "tune": {k: round(v, 6) for k, v in self.tune_scores.items()},
                "test": {k: round(v, 6) for k, v in self.test_scores.items()},
                "retrieve_s": round(self.retrieve_s, 3), "grid_s": round(self.grid_s, 3),
                "top": [{**p.to_dict(), METRIC: round(s, 6)} for p, s in self.top]}


def split_queries(qids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Shuffle (from the sorted ids, so file order does not matter) and cut in half: (tuning, test)."""
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return order[:half], order[half:]


def build_grid(defaults: FusionParams, rrf_ks: Sequence[int] = RRF_KS,
               weight_pairs: Sequence[tuple[float, float]] = WEIGHT_PAIRS,
               graph_weights: Sequence[float] = GRAPH_WEIGHTS, depths: Sequence[int] = DEPTHS) -> list[FusionParams]:
    """Every combination, the current settings first (so a tie keeps them). ``rrf_ks`` only vary under
    RRF: score fusion has no k, so the grid does not multiply by them."""
    base = dict(defaults.weights)
    grid = [defaults]
    ks = rrf_ks if defaults.method == "rrf" else (defaults.rrf_k,)
    for k, (wd, wb), wg, depth in itertools.product(ks, weight_pairs, graph_weights, depths):
        p = FusionParams.of(k, depth, {**base, "dense": wd, "bm25": wb, "prf": wb, "graph": wg}, defaults.method,
                            defaults.window)
        if p not in grid:
            grid.append(p)
    return grid


def fuse_documents(lists: BranchLists, params: FusionParams, k: int = 100) -> list[str]:
    """Document ranking of one query under ``params``: lists cut to branch_k, fused, documents deduped."""
    fusion = Fusion(params.method, params.rrf_k, dict(params.weights), params.window)
    fused = fusion.fuse([(kind, hits[: params.branch_k]) for kind, hits in lists])
    return list(dict.fromkeys(doc_of(c) for c, _ in fused))[:k]


def score(params: FusionParams, cache: Mapping[str, BranchLists], qrels: Mapping[str, Mapping[str, int]],
          external: Mapping[str, str], qids: Sequence[str]) -> float:
    rankings = {q: [external.get(d, d) for d in fuse_documents(cache[q], params)] for q in qids}
    return evaluate_rankings({q: qrels[q] for q in qids}, rankings, [METRIC]).mean[METRIC]


async def collect_lists(retriever: Any, dataset: BeirDataset, depth: int, concurrency: int = 4,
                        branches: Sequence[str] | None = None) -> dict[str, BranchLists]:
    """Each query's branch lists at ``depth`` (``branches``: default the configured ones). Concurrent (no
    latency is measured here), bounded so the thread pools are not flooded."""
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> BranchLists:
        async with gate:
            r = await retriever.aretrieve(text, branches=branches, k=depth)
        return [(rl.kind, [(h.chunk_id, h.score) for h in rl.hits]) for rl in r.lists]

    qids = list(dataset.queries)
    found = await asyncio.gather(*(one(dataset.queries[q]) for q in qids))
    return dict(zip(qids, found, strict=True))


def search(grid: Sequence[FusionParams], cache: Mapping[str, BranchLists], qrels: Mapping[str, Mapping[str, int]],
           external: Mapping[str, str], qids: Sequence[str]) -> list[tuple[FusionParams, float]]:
    """Grid points with their score on ``qids``, best first (stable: earlier grid points win ties)."""
    scored = [(p, score(p, cache, qrels, external, qids)) for p in grid]
    return sorted(scored, key=lambda ps: -ps[1])


async def atune(engine: Any, dataset_dir: str | Path, seed: int = 0, *, limit: int | None = None,
                split: str = "test", grid: Sequence[FusionParams] | None = None, ingest: bool = True,
                branches: Sequence[str] | None = None) -> TuneReport:
    dataset = limit_dataset(load_beir(dataset_dir, split), limit)
    if ingest:
        await engine.aingest([dataset.corpus])
    cfg = engine.settings.retrieval
    default = FusionParams.of(cfg.rrf_k, cfg.branch_k, cfg.weights, str(cfg.fusion), cfg.fusion_window)
    if grid is None:
        fused = branches or cfg.branches
        # without the graph branch its weight changes nothing: do not triple the grid for it
        graph_weights = GRAPH_WEIGHTS if "graph" in fused else (float(cfg.weights.get("graph", 1.0)),)
        grid = build_grid(default, graph_weights=graph_weights)
    if dataset.files:
        raise ConfigError("dataset", f"{dataset.corpus}: tuning needs a corpus.jsonl set (a file corpus is "
                                     "judged by page; use fanrag eval)")
    external = external_map(engine.stores.meta, corpus_ids(dataset.corpus))
    t0 = time.perf_counter()
    cache = await collect_lists(engine.retriever, dataset, max(p.branch_k for p in grid), branches=branches)
    t1 = time.perf_counter()
    tune_q, test_q = split_queries(list(dataset.queries), seed)
    ranked = search(grid, cache, dataset.qrels, external, tune_q)
    best, best_tune = ranked[0]
    default_tune = next(s for p, s in ranked if p == default) if default in grid else \
        score(default, cache, dataset.qrels, external, tune_q)
    test_scores = {"best": score(best, cache, dataset.qrels, external, test_q),
                   "default": score(default, cache, dataset.qrels, external, test_q)}
    return TuneReport(seed=seed, n_tune=len(tune_q), n_test=len(test_q), grid_size=len(grid), best=best,
                      default=default, tune_scores={"best": best_tune, "default": default_tune},
                      test_scores=test_scores, retrieve_s=t1 - t0, grid_s=time.perf_counter() - t1,
                      top=ranked[:5])


def tune(engine: Any, dataset_dir: str | Path, seed: int = 0, **kw: Any) -> TuneReport:
    return asyncio.run(atune(engine, dataset_dir, seed, **kw))


# ------------------------------------------------------------------------------------------ fanrag.toml


def write_retrieval_settings(home: str | Path, params: FusionParams) -> Path:
    """Set retrieval.rrf_k, branch_k and weights in ``home/fanrag.toml``; every other setting in the
    file is kept (comments are not: the file is rewritten from its parsed values)."""
    path = Path(home) / CONFIG_FILE
    data: dict[str, Any] = tomllib.loads(path.read_text("utf-8")) if path.is_file() else {}
    section = data.setdefault("retrieval", {})
    section["rrf_k"] = params.rrf_k
    section["branch_k"] = params.branch_k
    section["weights"] = {**section.get("weights", {}), **dict(params.weights)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps_toml(data), "utf-8")
    tmp.replace(path)
    return path


def dumps_toml(data: Mapping[str, Any]) -> str:
    """TOML for fanrag's config shape: top-level tables of scalars, arrays and inline tables."""
    lines: list[str] = []
    plain = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    for key, value in plain.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for name, table in data.items():
        if isinstance(table, Mapping):
            if lines:
                lines.append("")
            lines.append(f"[{_key(name)}]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _string(key)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # control characters are illegal raw in TOML strings
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
