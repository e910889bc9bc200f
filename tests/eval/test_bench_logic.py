"""The benchmark scripts' logic on tiny inputs: percentiles, result files, the clustered data generator,
exact search and recall, ratios, corpus and PDF slicing. No timings are asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import _common
import ingest as bench_ingest
import numpy as np
import pdf as bench_pdf
import pytest
import scale
from hypothesis import given, settings
from hypothesis import strategies as st

from fanrag.eval.stats import latency_summary, percentile

ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
       st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_percentile_edges() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    s = latency_summary([10.0] * 99 + [1000.0])
    assert s["p50_ms"] == 10.0 and s["p99_ms"] == pytest.approx(10.0 + 0.01 * 990) and s["n"] == 100


def test_write_result_records_the_environment(tmp_path: Path) -> None:
    before = _common.environment()
    path = _common.write_result("unit", {"value": np.float32(1.5), "arr": np.arange(3)}, before,
                                results_dir=tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / "unit.json" and data["name"] == "unit"
    assert data["value"] == 1.5 and data["arr"] == [0, 1, 2]
    env = data["environment"]
    assert env["cpu_count"] >= 1 and len(env["loadavg"]) == 3 and len(env["loadavg_before"]) == 3
    assert env["platform"] and env["timestamp"].endswith("+00:00")
    assert "git_commit" in env


def test_ratio_refuses_missing_values() -> None:
    assert _common.ratio(3.0, 2.0) == 1.5
    assert _common.ratio(0.0, 2.0) is None
    assert _common.ratio(3.0, 0.0) is None


def test_print_table_aligns_columns() -> None:
    lines: list[str] = []
    _common.print_table("t", [{"a": "x", "b": 1.23456}, {"a": "long", "b": None}], ["a", "b"], lines.append)
    assert lines[0] == "t"
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    assert "1.235" in lines[3] and lines[4].rstrip().endswith("-")


def test_memory_sampler_sees_this_process() -> None:
    with _common.MemorySampler(interval_s=0.01) as mem:
        block = np.ones(20_000_000, dtype=np.uint8)  # 20 MB touched
        block.sum()
    assert mem.peak_mb >= mem.start_mb > 0


# ---------------------------------------------------------------------------------------- scale.py


def test_clustered_vectors_are_unit_deterministic_and_clustered() -> None:
    cents = scale.centres(20, 64, seed=1)
    a = scale.vector_block(cents, 0, 500, 0.35, seed=1)
    b = scale.vector_block(cents, 0, 500, 0.35, seed=1)
    assert a.dtype == np.float32 and a.shape == (500, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    # each point sits far closer to its best centre than random directions do (~0 cosine in 64-d)
    best = (a @ cents.T).max(axis=1)
    assert best.min() > 0.8
    assert not np.array_equal(scale.vector_block(cents, 500, 1000, 0.35, seed=1), a)


def test_exact_topk_matches_brute_force_across_blocks() -> None:
    cents = scale.centres(10, 32, seed=2)
    n = 1234
    data = np.concatenate([scale.vector_block(cents, s, e, 0.5, 2) for s, e in scale.blocks(n, 300)])
    q = scale.queries(cents, 7, 0.5, seed=2)
    got = scale.exact_topk(q, cents, n, 10, 0.5, 2, block=300)
    want = np.argsort(-(q @ data.T), axis=1, kind="stable")[:, :10]
    assert [set(r) for r in got.tolist()] == [set(r) for r in want.tolist()]


def test_recall_and_chunk_id_round_trip() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert scale.recall_at_k([[1, 2, 9, 9], [5, 6, 7, 8]], exact, 4) == pytest.approx((2 + 4) / 8)
    assert all(scale.index_of(scale._chunk_id(i)) == i for i in (0, 7, 999_999))


def test_scale_run_on_a_tiny_index(tmp_path: Path) -> None:
    res = scale.run(n=3000, clusters=30, spread=0.35, n_queries=20, k=10, shards=2, seed=0, workdir=tmp_path,
                    checkpoint_every=1000)
    assert res["n"] == 3000 and res["queries"] == 20
    assert 0.9 <= res["recall@10"] <= 1.0  # HNSW at this size is close to exact
    assert res["query_p50_ms"] <= res["query_p99_ms"]


# ---------------------------------------------------------------------------------------- ingest.py / pdf.py


def test_head_lines_skips_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "1"}\n\n{"_id": "2"}\n{"_id": "3"}\n')
    out = bench_ingest.head_lines(src, 2, tmp_path / "h.jsonl")
    assert out.read_text() == '{"_id": "1"}\n{"_id": "2"}\n'


def test_ingest_ratios() -> None:
    r = bench_ingest.compare({"fanrag": {"wall_s": 11.0}, "floor": {"wall_s": 10.0},
                              "st-fp32": {"wall_s": 17.0}, "sequential": {"error": "exit 1"}})
    assert r["fanrag_over_floor"] == pytest.approx(1.1)
    assert r["st_fp32_over_floor"] == pytest.approx(1.7)
    assert r["sequential_over_fanrag"] is None and r["llamaindex_over_fanrag"] is None


def test_llamaindex_tokenizer_counts_past_128_and_pickles() -> None:
    import pickle

    from fanrag.embed.models import find_model_dir

    model = find_model_dir("all-MiniLM-L6-v2")
    if model is None:
        pytest.skip("packaged MiniLM not installed")
    tok = bench_ingest.TokenIds(str(model / "tokenizer.json"))
    assert len(tok("word " * 300)) == 300  # no truncation, no padding
    assert len(tok("one word")) == 2
    assert len(pickle.loads(pickle.dumps(tok))("word " * 3)) == 3


def test_pdf_overrides_and_page_slicing(tmp_path: Path) -> None:
    assert bench_pdf.pipeline_overrides("single", 16, 32) == {"pdf_page_threshold": bench_pdf.HUGE}
    assert bench_pdf.pipeline_overrides("fanout", 16, 8) == {"pdf_page_threshold": 16, "pages_per_range": 8}
    with pytest.raises(ValueError):
        bench_pdf.pipeline_overrides("other", 1, 1)
    src = ROOT / "examples" / "corpus" / "gnuplot-5.4-manual.pdf"
    if not src.is_file():
        pytest.skip("example PDF missing")
    out = bench_pdf.first_pages(src, 5, tmp_path / "five.pdf")
    assert bench_pdf.page_count(out) == 5


def test_stores_and_scaleout_corpus_slicing(tmp_path: Path) -> None:
    import scaleout
    import stores

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"body {i}"}) + "\n"
                              for i in range(5)))
    sub = stores.subset(corpus, 3, tmp_path / "sub.jsonl")
    assert [json.loads(x)["_id"] for x in sub.read_text().splitlines()] == ["d0", "d1", "d2"]
    files = scaleout.write_files(corpus, 2, tmp_path / "docs")
    assert sorted(p.name for p in files.iterdir()) == ["d0.txt", "d1.txt"]
    assert (files / "d1.txt").read_text() == "T1\n\nbody 1\n"
