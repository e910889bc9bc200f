"""Answer quality on every dev set, as a user gets it: ``bench/results/quality.json``.

For each set: the index is built by the default pipeline (or reused when it already holds the corpus as
it is), then ``fanrag eval`` runs the ``default`` row (exactly the configuration a user gets with no
options) beside every branch alone and ``hybrid`` (dense + bm25). Reported per set: nDCG@10 and
Recall@100 of every row, hit@5 (a relevant document in the top 5: the evidence page of a filing) and
all@10 (every relevant document in the top 10: what a multi-hop question needs), the answer scores where the set has gold answers, and the default's margin
over the best single branch. The summary gives the spread of that margin across the sets: defaults are
chosen across all of them together, never per set.

    python bench/quality.py                       # every set found (see SETS), homes under /work/bench-homes
    python bench/quality.py --sets scifact,tatqa --homes /tmp/h --limit 100
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, environment, write_result

from fanrag.engine import Engine
from fanrag.eval.runner import EvalReport, aevaluate, open_engine

SHARED = ROOT.parent / "shared" / "data"
BUILT = Path("/work/data")  # sets built by bench/datasets/*.py


@dataclass(frozen=True, slots=True)
class DevSet:
    name: str
    path: Path
    ignore_identical_ids: bool = False  # BEIR's ArguAna rule
    note: str = ""


SETS = (
    DevSet("scifact", SHARED / "scifact", note="BEIR SciFact test (300 claims)"),
    DevSet("arguana", SHARED / "arguana", ignore_identical_ids=True, note="BEIR ArguAna (1,401 of 1,406 queries)"),
    DevSet("tatqa", SHARED / "tatqa", note="TAT-QA test: tables and paragraphs of financial reports, answers"),
    DevSet("multihop", BUILT / "multihop", note="bench/datasets/build_multihop.py: Wikipedia leads, bridge and "
                                                 "comparison questions, answers"),
    DevSet("factbook", BUILT / "factbook", note="bench/datasets/build_factbook.py: CIA Factbook sections, lookup, "
                                                "bridge and comparison questions, answers"),
    DevSet("pdf10k", BUILT / "pdf10k", note="bench/datasets/build_pdf10k.py: 10-K style PDFs, page-level evidence"),
)
BRANCH_ROWS = ("dense", "bm25", "graph", "subqueries", "hop")  # each branch alone
ANCHORS = {  # published nDCG@10 to read ours against (shared/README.md)
    "scifact": {"BM25 (Anserini)": 0.679, "bge-base-en-v1.5": 0.741, "RRF BM25 + bge-base (Pyserini)": 0.742,
                "all-MiniLM-L6-v2": 0.645},
    "arguana": {"BM25 flat": 0.397, "BM25 multifield": 0.414, "bge-base-en-v1.5": 0.636},
}


def rows(report: EvalReport) -> dict[str, dict[str, Any]]:
    out = {}
    for a in report.ablations:
        row: dict[str, Any] = {m: round(a.metrics[m], 4) for m in ("ndcg@10", "recall@100", "hit@5", "all@10")}
        row["p50_ms"] = round(a.latency["p50_ms"], 2)
        if a.answers:
            row["answers"] = {m: round(v, 4) for m, v in a.answers.items()}
        out[a.name] = row
    return out


async def run_set(ds: DevSet, home: Path, limit: int | None) -> dict[str, Any]:
    engine, needs_ingest = open_engine(home, ds.path)
    t0 = time.perf_counter()
    with engine:
        main = await aevaluate(engine, ds.path, ["default", "hybrid"], limit=limit, ingest=needs_ingest,
                               ignore_identical_ids=ds.ignore_identical_ids)
        singles = [await aevaluate(engine, ds.path, branches=[b], limit=limit, ingest=False, answers=False,
                                   ignore_identical_ids=ds.ignore_identical_ids)
                   for b in BRANCH_ROWS if b in engine.retriever.branches]
    table = rows(main)
    for rep in singles:
        table.update(rows(rep))
    single = {b: table[b]["ndcg@10"] for b in BRANCH_ROWS if b in table}
    best = max(single, key=single.__getitem__)
    return {"note": ds.note, "queries": main.n_queries, "ingest": main.ingest, "rows": table,
            "best_single_branch": best, "default_minus_best_branch": round(table["default"]["ndcg@10"] - single[best], 4),
            "anchors": ANCHORS.get(ds.name, {}), "seconds": round(time.perf_counter() - t0, 1)}


def summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    margins = {n: r["default_minus_best_branch"] for n, r in results.items()}
    return {"default_at_or_above_best_branch_everywhere": all(m >= 0 for m in margins.values()),
            "margin_min": min(margins.values(), default=0.0), "margin_max": max(margins.values(), default=0.0),
            "margins": margins, "default_ndcg@10": {n: r["rows"]["default"]["ndcg@10"] for n, r in results.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="", help="comma-separated subset of: " + ", ".join(s.name for s in SETS))
    ap.add_argument("--homes", type=Path, default=Path("/work/bench-homes"), help="one index home per set")
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries of each set")
    ap.add_argument("--name", default="quality", help="result file name (bench/results/NAME.json)")
    args = ap.parse_args()
    chosen = [s for s in SETS if not args.sets or s.name in args.sets.split(",")]
    env = environment()
    results: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for ds in chosen:
        if not (ds.path / "queries.jsonl").is_file():
            missing[ds.name] = f"{ds.path}: not built (see bench/datasets/README.md)"
            continue
        print(f"=== {ds.name}", flush=True)
        results[ds.name] = asyncio.run(run_set(ds, args.homes / ds.name, args.limit))
        r = results[ds.name]
        print(f"default {r['rows']['default']['ndcg@10']} vs best branch {r['best_single_branch']} "
              f"({r['default_minus_best_branch']:+.4f})", flush=True)
    with Engine.open(args.homes / chosen[0].name, mode="read") as engine:  # the configuration measured
        settings = engine.settings
    path = write_result(args.name, {"sets": results, "missing": missing, "summary": summary(results),
                                    "limit": args.limit,
                                    "settings": {"retrieval": _plain(settings.retrieval), "chunk": _plain(settings.chunk),
                                                 "embedder": f"{settings.embed.backend}/{settings.embed.model}"}},
                        env_before=env)
    print(f"wrote {path}")


def _plain(section: Any) -> dict[str, Any]:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(section).items()}


if __name__ == "__main__":
    main()
