"""Query decomposition and the second retrieval hop (``retrieve/hop.py``) on the multi-hop dev sets.

Each set's index (built from the set, opened read-only) answers every question through
``Retriever.aquery`` (no answer, no rerank) in four configurations: the configured branches (the default
fusion) without and with the hop branch, and dense + bm25 without and with it; the two with it again at
each ``--hop-weights`` fusion weight of the hop lists (the configured weight is the first run's). Per
configuration, over all questions and by question type (``answers.jsonl``: bridge, comparison, lookup):

    all@10     recall of all gold passages at 10: a question counts when every gold passage is among the
               top 10 documents
    recall@10  share of the gold passages in the top 10;  ndcg@10 (trec_eval's definition)
    fired      how often the hop branch searched (a second hop), split a comparison into sub-questions,
               and how often the rules decomposer (the transform step) gave sub-questions
    latency    p50/p95 of the retrieval (ms) and of the hop branch within it: indicative only, the CPUs
               are shared with other work while it runs (see environment.loadavg); and the hop branch's
               own CPU time per question (thread time, native search code included), run alone, which a
               busy machine inflates far less than wall time

    python bench/multihop.py                               # both sets -> bench/results/multihop.json
    python bench/multihop.py --sets multihop --limit 100   # a quick look, not written unless --out
    python bench/multihop.py --hop-weights 0.25 0.5        # +hop also at these fusion weights of its lists
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, percentile, print_table, write_result

from fanrag.engine import Engine
from fanrag.eval.beir import corpus_ids, load_beir
from fanrag.eval.metrics import ndcg_at_k, recall_at_k
from fanrag.eval.runner import external_map, full_chunk_ranking, rank_documents, to_external
from fanrag.retrieve.results import QueryResult, doc_of
from fanrag.settings import Settings
from fanrag.types import BranchName

SETS = {"multihop": ("/work/data/multihop", "/work/idx/multihop"),
        "factbook": ("/work/data/factbook", "/work/idx/factbook")}
HOP = BranchName.HOP.value
K = 10


@dataclass
class Question:
    qid: str
    text: str
    gold: dict[str, int]
    type: str


@dataclass
class Outcome:
    """One question under one configuration."""

    all10: float
    recall10: float
    ndcg10: float
    ms: float
    hop_ms: float | None  # None: the hop branch was not in the configuration
    hopped: bool = False  # a second hop searched
    split: bool = False  # the hop branch split a comparison
    rules_split: bool = False  # the transform step's rules gave sub-questions


@dataclass
class Config:
    name: str
    branches: tuple[str, ...]
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def load_questions(data: Path) -> list[Question]:
    ds = load_beir(data)
    types = {}
    with (data / "answers.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            types[str(row["_id"])] = str(row.get("type", ""))
    return [Question(qid, text, ds.qrels[qid], types.get(qid, "")) for qid, text in ds.queries.items()]


def all_gold_at(ranking: Sequence[str], gold: Mapping[str, int], k: int) -> float:
    """1.0 when every relevant document is in the top ``k`` of ``ranking``."""
    relevant = {d for d, r in gold.items() if r >= 1}
    return float(bool(relevant) and relevant <= set(ranking[:k]))


def outcome(res: QueryResult, fused: Sequence[tuple[str, float]], q: Question, external: Mapping[str, str],
            ms: float) -> Outcome:
    chunks = full_chunk_ranking(res, fused)
    docs = [d for d, _ in to_external(rank_documents((doc_of(c), s) for c, s in chunks), external, 100)]
    timing = res.retrieval.branches.get(HOP)
    trace = res.retrieval.trace
    return Outcome(all10=all_gold_at(docs, q.gold, K), recall10=recall_at_k(docs, q.gold, K),
                   ndcg10=ndcg_at_k(docs, q.gold, K), ms=ms, hop_ms=timing.ms if timing else None,
                   hopped=any(rl.kind == HOP for rl in res.retrieval.lists),
                   split=any(line.startswith("hop: comparison") for line in trace),
                   rules_split=bool(res.retrieval.transform.subqueries))


async def run_all(runs: Sequence[tuple[Any, Config]], questions: Sequence[Question],
                  external: Mapping[str, str]) -> None:
    """Every question under every configuration, the configurations in turn from a different one for
    each question, so a busy moment of the machine does not land on one configuration only."""
    for retriever, cfg in runs:  # warm-up: model sessions, index pages
        await retriever.aquery(questions[0].text, branches=cfg.branches, generate=False, rerank=False)
    for i, q in enumerate(questions):
        for j in range(len(runs)):
            retriever, cfg = runs[(i + j) % len(runs)]
            res = await retriever.aquery(q.text, branches=cfg.branches, generate=False, rerank=False)
            cfg.outcomes[q.qid] = outcome(res, retriever.fuse(res.retrieval.lists), q, external,
                                          res.retrieval.total_ms)


def _mean(values: Iterable[float]) -> float:
    xs = list(values)
    return round(sum(xs) / len(xs), 4) if xs else float("nan")


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(outcomes), "all@10": _mean(o.all10 for o in outcomes),
                           "recall@10": _mean(o.recall10 for o in outcomes),
                           "ndcg@10": _mean(o.ndcg10 for o in outcomes),
                           "rules_decomposer_fired": _mean(float(o.rules_split) for o in outcomes),
                           "latency_ms": {"p50": round(percentile([o.ms for o in outcomes], 50), 2),
                                          "p95": round(percentile([o.ms for o in outcomes], 95), 2)}}
    hop = [o.hop_ms for o in outcomes if o.hop_ms is not None]
    if hop:
        out["hop_fired"] = _mean(float(o.hopped) for o in outcomes)
        out["hop_split_comparison"] = _mean(float(o.split) for o in outcomes)
        out["hop_branch_ms"] = {"p50": round(percentile(hop, 50), 2), "p95": round(percentile(hop, 95), 2)}
    return out


def by_type(cfg: Config, questions: Sequence[Question]) -> dict[str, Any]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for q in questions:
        groups["all"].append(cfg.outcomes[q.qid])
        groups[q.type].append(cfg.outcomes[q.qid])
    return {t: summarise(v) for t, v in groups.items()}


def configs(settings: Settings, hop_weight: float | None) -> list[Config]:
    """Without and with the hop branch, or (``hop_weight`` given) only with it, at that fusion weight."""
    base = tuple(str(b) for b in settings.retrieval.branches if b != HOP)
    if hop_weight is not None:
        return [Config(f"default+hop@{hop_weight:g}", (*base, HOP)),
                Config(f"dense+bm25+hop@{hop_weight:g}", ("dense", "bm25", HOP))]
    return [Config("default", base), Config("default+hop", (*base, HOP)),
            Config("dense+bm25", ("dense", "bm25")), Config("dense+bm25+hop", ("dense", "bm25", HOP))]


def hop_cpu_ms(engine: Engine, questions: Sequence[Question]) -> dict[str, float]:
    """The hop branch run alone on every question: p50/p95 of its thread CPU time (ms), and of its wall
    time for comparison."""
    retriever = engine.retriever
    branch = retriever.branches[BranchName.HOP]
    cpu: list[float] = []
    wall: list[float] = []
    for q in questions:
        t = retriever.transformer.transform(q.text)
        if branch.skip_reason(t):
            continue
        c0, w0 = time.thread_time(), time.perf_counter()
        branch.run(t, retriever.settings.retrieval.branch_k, False)
        cpu.append((time.thread_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
    return {"runs": len(cpu), "cpu_p50_ms": round(percentile(cpu, 50), 3), "cpu_p95_ms": round(percentile(cpu, 95), 3),
            "wall_p50_ms": round(percentile(wall, 50), 3), "wall_p95_ms": round(percentile(wall, 95), 3)}


def run_set(data: Path, home: Path, limit: int | None, hop_weights: Sequence[float]) -> dict[str, Any]:
    questions = load_questions(data)[:limit]
    settings = Settings.load(home=home)
    engines = [Engine.open(settings=settings, mode="read")]
    engines += [Engine.open(settings=settings.replace(retrieval={"weights": {**settings.retrieval.weights, HOP: w}}),
                            mode="read") for w in hop_weights]
    try:
        runs = [(e.retriever, c) for e, w in zip(engines, (None, *hop_weights), strict=True)
                for c in configs(e.settings, w)]
        external = external_map(engines[0].stores.meta, corpus_ids(data / "corpus.jsonl"))
        asyncio.run(run_all(runs, questions, external))
        alone = hop_cpu_ms(engines[0], questions)
    finally:
        for e in engines:
            e.close()
    r = settings.retrieval
    fusion = {"fusion": str(getattr(r, "fusion", "rrf")), "rrf_k": r.rrf_k, "weights": dict(r.weights),
              "configured_branches": [str(b) for b in r.branches], "transform": str(r.transform)}
    return {"data": str(data), "index": str(home), "questions": len(questions), "retrieval": fusion,
            "hop_branch_alone": alone, "configs": {c.name: {"branches": list(c.branches), "by_type": by_type(c, questions)} for _, c in runs}}


def table(name: str, result: Mapping[str, Any]) -> None:
    rows = []
    for cname, c in result["configs"].items():
        for t, s in sorted(c["by_type"].items(), key=lambda kv: (kv[0] != "all", kv[0])):
            rows.append({"config": cname, "type": t, "n": s["n"], "all@10": s["all@10"], "R@10": s["recall@10"],
                         "nDCG@10": s["ndcg@10"], "hop": s.get("hop_fired"), "split": s.get("hop_split_comparison"),
                         "rules": s["rules_decomposer_fired"], "p50 ms": s["latency_ms"]["p50"],
                         "p95 ms": s["latency_ms"]["p95"], "hop ms": s.get("hop_branch_ms", {}).get("p50")})
    alone = result["hop_branch_alone"]
    print_table(f"{name}: {result['questions']} questions (hop branch alone, {alone['runs']} runs: CPU p50 "
                f"{alone['cpu_p50_ms']} ms, p95 {alone['cpu_p95_ms']} ms; wall p50 {alone['wall_p50_ms']} ms)", rows,
                ["config", "type", "n", "all@10", "R@10", "nDCG@10", "hop", "split", "rules", "p50 ms", "p95 ms",
                 "hop ms"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    ap.add_argument("--hop-weights", nargs="*", type=float, default=[0.5],
                    help="also run the +hop configurations with these fusion weights of the hop lists")
    ap.add_argument("--out", default=None, help="result name (default: multihop, unless --limit)")
    args = ap.parse_args(argv)
    env = environment()
    results = {}
    for name in args.sets:
        data, home = SETS[name]
        results[name] = run_set(Path(data), Path(home), args.limit, args.hop_weights)
        table(name, results[name])
    out = args.out or (None if args.limit else "multihop")
    if out:
        path = write_result(out, {"k": K, "hop_weights": args.hop_weights, "sets": results}, env, RESULTS)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
