"""bench/retrieval.py's logic on the small real index (the numbers themselves are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench" / "retrieval.py"


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_retrieval", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_runs_judged_queries_and_writes_its_result(real_home: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    queries = [("1", "aspirin side effects"), ("2", "volcanic ash and air travel"), ("3", "not judged"),
               ("4", "beta cells in type 1 diabetes")]
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tx\t1\n2\ty\t1\n4\tz\t1\n")
    bench = load_bench()
    assert [q for q, _ in bench.load_queries(data)] == ["1", "2", "4"]

    out = tmp_path / "results"
    bench.main(["--home", str(real_home.home), "--data", str(data), "--warmup", "1", "--out", str(out)])
    result = json.loads((out / "retrieval.json").read_text())
    assert result["name"] == "retrieval" and result["queries"] == 3
    assert {"loadavg", "loadavg_before", "cpu_count"} <= set(result["environment"])
    for run in ("parallel", "sequential", "query_with_extractive_answer"):
        assert result[run]["p50_ms"] <= result[run]["p95_ms"] <= result[run]["p99_ms"]
    assert set(result["branches_parallel"]) == {"dense", "bm25", "subqueries", "graph", "hop"}
    assert result["branch_status"]["dense"] == {"ok": 3}
    assert result["index"]["vector_shards"] >= 1 and result["index"]["chunks"] >= 4
    assert set(result["meets_targets"]) == {"p50_le_15ms", "fanout_over_slowest_le_1.15",
                                            "fanout_over_sequential_le_0.6"}
