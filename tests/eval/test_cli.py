"""``fanrag eval`` and ``fanrag tune`` through click's CliRunner on a 12-abstract SciFact slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.eval.beir import read_trec_run
from fanrag.settings import Settings

from .test_runner import write_beir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SCIFACT

    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    judged = [ln.split("\t") for ln in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:13]]
    want = {d for _, d, _ in judged}
    corpus = [o for o in map(json.loads, (SCIFACT / "corpus.jsonl").read_text().splitlines()) if o["_id"] in want]
    queries = [o for o in map(json.loads, (SCIFACT / "queries.jsonl").read_text().splitlines())
               if o["_id"] in {q for q, _, _ in judged}]
    return write_beir(tmp_path_factory.mktemp("tiny") / "ds", corpus, queries, [(q, d, int(s)) for q, d, s in judged])


def test_eval_json_and_run_files(tiny: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ["eval", str(tiny), "--home", str(home), "--ablations", "bm25,hybrid", "--k", "10", "--json",
            "--out", str(tmp_path / "run.trec")]
    res = CliRunner().invoke(cli, args, env={"FANRAG_PIPELINE__WORKERS": "1"})
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert [a["name"] for a in report["ablations"]] == ["bm25", "hybrid"]
    assert report["ingest"]["ok"] == len((tiny / "corpus.jsonl").read_text().splitlines())
    assert set(report["ablations"][0]["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "hit@5", "all@10"}
    assert set(report["ablations"][0]["latency"]) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert [Path(p).name for p in report["run_files"]] == ["run.bm25.trec", "run.hybrid.trec"]
    assert len(read_trec_run(tmp_path / "run.hybrid.trec")) == report["n_queries"]

    # second run: the corpus is already indexed, so the index is opened read-only and nothing is ingested
    again = CliRunner().invoke(cli, ["eval", str(tiny), "--home", str(home), "--branches", "bm25", "--limit", "3"])
    assert again.exit_code == 0, again.output
    assert "bm25" in again.output and "nDCG@10" in again.output and "(test, 3 queries)" in again.output


def test_tune_writes_the_best_settings(tiny: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home).mkdir()
    (home / "fanrag.toml").write_text("[pipeline]\nworkers = 1\n")
    res = CliRunner().invoke(cli, ["tune", str(tiny), "--home", str(home), "--seed", "3", "--write", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["n_tune"] + out["n_test"] == len({q for q in read_queries(tiny)})
    assert out["tune"]["best"] >= out["tune"]["default"]  # the defaults are in the grid
    s = Settings.load(home=home, env={})
    assert s.pipeline.workers == 1  # kept
    assert s.retrieval.rrf_k == out["best"]["rrf_k"] and s.retrieval.branch_k == out["best"]["branch_k"]
    assert s.retrieval.weights == {k: float(v) for k, v in out["best"]["weights"].items()}


def test_unknown_ablation_is_a_usage_error(tiny: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["eval", str(tiny), "--home", str(tmp_path / "h"), "--ablations", "magic"],
                             env={"FANRAG_PIPELINE__WORKERS": "1"})
    assert res.exit_code == 2 and "unknown ablation 'magic'" in res.output


def read_queries(root: Path) -> list[str]:
    lines = (root / "qrels" / "test.tsv").read_text().splitlines()[1:]
    return list(dict.fromkeys(ln.split("\t")[0] for ln in lines))
