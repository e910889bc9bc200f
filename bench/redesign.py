"""The redesign kept its figures: ingestion and retrieval of one commit against another, in the same run.

Each commit is checked out in its own git worktree and runs its *own* ``bench/ingest.py`` (a fresh home,
every variant in its own process) and ``bench/retrieval.py`` (on the home that ingest kept), one after
the other on the same machine. Reported per commit: ingest wall time and chunks/s, fanrag / embed floor,
retrieval p50/p95 parallel and sequential, and the full query with the extractive answer; then each
figure of ``--head`` over the same figure of ``--base`` (1.00 = unchanged; for times, < 1 is faster).

What differs besides the code layout is stated in the result: a base before the torch-free embedder and
before answer-quality changes (chunk headers, score fusion, the hop branch) indexes and searches a
little differently, so a ratio measures the whole difference between the two commits, not the layout alone.

    python bench/redesign.py                                    # base ae928e3 (before the redesign), HEAD
    python bench/redesign.py --base ae928e3 --head HEAD --docs 500 --queries 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, write_result

BASE = "ae928e3"  # the last commit before the redesign (issue 10)
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"  # a worktree has no ../shared beside it


def worktree(commit: str, parent: Path) -> tuple[Path, str]:
    """A detached worktree of ``commit`` under ``parent``, and the commit's full hash."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = parent / sha[:12]
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), sha], check=True)
    return tree, sha


def run_bench(tree: Path, args: list[str]) -> None:
    """One of the tree's own bench scripts, importing the tree's own fanrag."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, *args], cwd=tree, env=env, check=True)


def measure(tree: Path, docs: int, queries: int) -> dict[str, Any]:
    home = tree.parent / f"{tree.name}-home"
    out = tree / "bench" / "results"
    run_bench(tree, ["bench/ingest.py", "--corpus", str(SCIFACT / "corpus.jsonl"), "--docs", str(docs),
                     "--name", "ingest-cmp", "--keep-home", str(home)])
    run_bench(tree, ["bench/retrieval.py", "--home", str(home), "--data", str(SCIFACT), "--limit", str(queries),
                     "--out", str(out)])
    ingest = json.loads((out / "ingest-cmp.json").read_text())
    retrieval = json.loads((out / "retrieval.json").read_text())
    fan = ingest["variants"]["fanrag"]
    return {
        "ingest_wall_s": round(fan["wall_s"], 2), "chunks": fan["chunks"],
        "chunks_per_s": round(fan["chunks_per_s"], 2),
        "fanrag_over_floor": round(ingest["ratios"]["fanrag_over_floor"], 3),
        "peak_tree_rss_mb": round(fan["peak_tree_rss_mb"], 1),
        "retrieval_p50_ms": round(retrieval["parallel"]["p50_ms"], 2),
        "retrieval_p95_ms": round(retrieval["parallel"]["p95_ms"], 2),
        "sequential_p50_ms": round(retrieval["sequential"]["p50_ms"], 2),
        "query_with_answer_p50_ms": round(retrieval["query_with_extractive_answer"]["p50_ms"], 2),
        "branches": retrieval["index"]["branches"], "embedder": retrieval["index"]["embedder"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=BASE, help="the commit measured against (default: before the redesign)")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--docs", type=int, default=500, help="SciFact documents ingested")
    ap.add_argument("--queries", type=int, default=100, help="SciFact claims queried")
    args = ap.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="fanrag-redesign-") as tmp:
        figures: dict[str, Any] = {}
        trees = []
        try:
            for role, commit in (("base", args.base), ("head", args.head)):
                tree, sha = worktree(commit, Path(tmp))
                trees.append(tree)
                print(f"=== {role} {sha[:12]}", flush=True)
                figures[role] = {"commit": sha, **measure(tree, args.docs, args.queries)}
        finally:
            for tree in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    base, head = figures["base"], figures["head"]
    ratios = {k: round(head[k] / base[k], 3) for k in base
              if isinstance(base[k], (int, float)) and not isinstance(base[k], bool) and base[k]}
    path = write_result("redesign", {"docs": args.docs, "queries": args.queries, "base": base, "head": head,
                                     "head_over_base": ratios}, env_before=env)
    print(json.dumps(ratios, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
