from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from fanrag.cli.query import query


def test_json_prints_one_object(real_home: Any) -> None:
    res = CliRunner().invoke(query, ["What causes type 1 diabetes?", "--home", str(real_home.home), "--json",
                                     "--top-n", "2"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert set(d) == {"answer", "citations", "hits", "timings", "spans", "rerank", "transform"}
    assert len(d["hits"]) == 2 and d["hits"][0]["source"].endswith("insulin.txt")
    assert d["citations"][0]["source"].endswith("insulin.txt")


def test_explain_draws_the_timeline(real_home: Any) -> None:
    res = CliRunner().invoke(query, ["aspirin side effects", "--home", str(real_home.home), "--explain"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "Extractive answer" in out and "Sources:" in out and "aspirin.txt" in out
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if line.startswith("  ") and "|" in line}
    assert {"transform", "dense", "bm25", "subqueries", "graph", "fuse", "fetch", "rerank", "generate"} <= set(rows)
    assert "█" in rows["dense"].split("|")[1] and "fan-out wall" in out
    assert {"shard:0", "shard:1"} <= set(rows)  # the dense branch's shard searches, drawn under it


def test_branches_option(real_home: Any) -> None:
    res = CliRunner().invoke(query, ["aspirin", "--home", str(real_home.home), "--json", "--branches", "bm25,dense",
                                     "--no-answer"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert set(d["timings"]["branches"]) == {"bm25", "dense"} and d["answer"] == ""
    bad = CliRunner().invoke(query, ["aspirin", "--home", str(real_home.home), "--branches", "sparse"])
    assert bad.exit_code == 2 and "unknown branch 'sparse'" in bad.output


def test_missing_index_is_a_clean_error(tmp_path: Any) -> None:
    from fanrag.cli import cli

    res = CliRunner().invoke(cli, ["query", "anything", "--home", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "no index here" in res.output and "Traceback" not in res.output


def test_streams_an_llm_answer_and_maps_citations(real_home: Any, serve: Any, openai_app: Any) -> None:
    url = serve(openai_app("Type 1 diabetes destroys the beta cells [1]."))
    env = {"FANRAG_LLM__BACKEND": "openai", "FANRAG_LLM__URL": url + "/v1"}
    res = CliRunner(env=env).invoke(query, ["What does type 1 diabetes destroy?", "--home", str(real_home.home),
                                            "--top-n", "1"])
    assert res.exit_code == 0, res.output
    first, rest = res.output.split("\n", 1)
    assert first == "Type 1 diabetes destroys the beta cells [1]."
    assert "Sources:\n  [1] " in rest and "insulin.txt" in rest.split("Sources:")[1].splitlines()[1]
