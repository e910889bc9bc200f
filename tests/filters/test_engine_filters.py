"""Filters end to end: a real index (default embedder, embedded stores) built by the ingestion pipeline,
queried through Engine and through the HTTP API."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.filters import FilterError
from tests.conftest import make_settings

DOCS = {
    "reports/volcano.txt": "Volcanic ash from Mount Etna can disrupt air travel across Europe.",
    "reports/aspirin.txt": "Aspirin reduces inflammation by blocking cyclooxygenase enzymes.",
    "notes/etna.md": "# Etna\n\nMount Etna is the most active volcano in Europe; its ash closes airports.",
}
RECORDS = [
    {"_id": "r1", "title": "Ash clouds", "text": "Volcanic ash clouds ground flights over Europe.",
     "metadata": {"year": 2010, "tags": ["volcano", "aviation"]}},
    {"_id": "r2", "title": "Etna 2021", "text": "Etna erupted again and volcanic ash fell on Catania.",
     "metadata": {"year": 2021, "tags": ["volcano"]}},
    {"_id": "r3", "title": "Insulin", "text": "Insulin regulates blood sugar.", "metadata": {"year": 2021}},
]
QUESTION = "volcanic ash from Mount Etna and air travel"


@pytest.fixture(scope="module")
def index(tmp_path_factory: Any) -> Any:
    docs = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    (docs / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    settings = make_settings(tmp_path_factory.mktemp("home"))
    with Engine.open(settings=settings) as engine:
        summary = engine.ingest([docs])
        assert summary.ok == len(DOCS) + len(RECORDS), summary.to_dict()
    return SimpleNamespace(settings=settings, docs=docs)


@pytest.fixture(scope="module")
def engine(index: Any) -> Any:
    with Engine.open(settings=index.settings, mode="read") as engine:
        yield engine


def _sources(hits: Any) -> set[str]:
    """Each hit's file name, with ``#id`` for a JSONL record."""
    return {Path(h.source).name + ("#" + h.metadata["uri"].split("#")[1] if "#" in h.metadata["uri"] else "")
            for h in hits}


def test_unfiltered_the_question_finds_every_kind_of_document(engine: Any) -> None:
    found = _sources(engine.retrieve(QUESTION).hits)
    assert {"volcano.txt", "etna.md"} <= found and any(s.startswith("records.jsonl#") for s in found)


def test_a_source_glob_keeps_that_folder_only(engine: Any, index: Any) -> None:
    res = engine.query(QUESTION, filter=f"source:{index.docs}/reports/**", generate=False)
    assert _sources(res.hits) == {"volcano.txt", "aspirin.txt"}
    assert res.retrieval.trace[0] == "filter: 2 documents match"
    assert "filter" in {s.name for s in res.spans}


def test_metadata_fields_from_jsonl_records(engine: Any) -> None:
    res = engine.retrieve(QUESTION, filter={"year": {"gte": 2020}, "tags": "volcano"})
    assert _sources(res.hits) == {"records.jsonl#r2"}
    res = engine.retrieve(QUESTION, filter="tags in (aviation) or year = 2021")
    assert _sources(res.hits) == {"records.jsonl#r1", "records.jsonl#r2", "records.jsonl#r3"}


def test_the_filter_is_applied_inside_each_branch_not_after_fusion(engine: Any) -> None:
    """With one hit per branch the unfiltered lists hold only volcano documents; the filtered query still
    finds the one allowed document, because each branch searched the allowed documents only."""
    res = engine.retrieve(QUESTION, k=1, filter="source:**/aspirin.txt")
    assert _sources(res.hits) == {"aspirin.txt"}
    assert res.lists and all(h.chunk_id.rsplit("-", 2)[0] == res.hits[0].doc_id for rl in res.lists for h in rl.hits)
    assert any(rl.kind == "dense" and rl.hits for rl in res.lists)
    unfiltered = engine.retrieve(QUESTION, k=1)
    assert res.hits[0].doc_id not in {h.chunk_id.rsplit("-", 2)[0] for rl in unfiltered.lists for h in rl.hits}
    statuses = {str(n): t.status for n, t in res.branches.items()}
    assert statuses["dense"] == "ok" and statuses["hop"] != "skipped: this branch takes no filter"


def test_a_filter_that_matches_nothing_returns_nothing(engine: Any) -> None:
    res = engine.query(QUESTION, filter="year > 3000")
    assert res.hits == [] and res.retrieval.trace[0] == "filter: 0 documents match"
    assert {t.status for t in res.retrieval.branches.values()} == {"skipped: the filter matches no document"}


def test_a_malformed_filter_is_a_filter_error(engine: Any) -> None:
    with pytest.raises(FilterError, match="expected an operator after 'year'"):
        engine.query(QUESTION, filter="year 2020")


def test_http_query_takes_a_filter(index: Any) -> None:
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app

    with Engine.open(settings=index.settings, mode="read") as engine, \
            TestClient(create_app(index.settings, engine)) as client:
        body = {"query": QUESTION, "generate": False}
        r = client.post("/query", json={**body, "filter": {"tags": "aviation"}})
        assert r.status_code == 200 and {h["doc_id"] for h in r.json()["hits"]} == {
            engine.retrieve(QUESTION, filter="tags = aviation").hits[0].doc_id}
        r = client.post("/query", json={**body, "filter": "source:**/*.md"})
        assert r.status_code == 200 and [h["source"].endswith("etna.md") for h in r.json()["hits"]] == [True]
        r = client.post("/query", json={**body, "filter": "source = ("})
        assert r.status_code == 400 and "bad filter" in r.json()["detail"]
        r = client.post("/query", json={**body, "filter": {"year": {"approx": 1}}})
        assert r.status_code == 400 and r.json()["detail"].startswith("bad filter operator 'approx'")
        r = client.post("/query", json={**body, "stream": True, "filter": "year = 2010"})
        assert r.status_code == 200 and "records.jsonl" in r.text.split("event: token")[0]
        r = client.post("/query", json={**body, "stream": True, "filter": "year 2010"})
        assert r.status_code == 400



def test_http_relative_source_paths_are_taken_from_the_ingest_root(index: Any) -> None:
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app

    settings = index.settings.replace(server={"ingest_root": str(index.docs)})
    with Engine.open(settings=settings, mode="read") as engine, TestClient(create_app(settings, engine)) as client:
        r = client.post("/query", json={"query": QUESTION, "generate": False, "filter": "source:reports/*"})
        assert r.status_code == 200
        assert sorted(h["source"] for h in r.json()["hits"]) == ["reports/aspirin.txt", "reports/volcano.txt"]


def test_cli_query_where(index: Any) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    home = str(index.settings.home)
    res = CliRunner().invoke(cli, ["query", QUESTION, "--home", home, "--json", "--no-answer",
                                   "--where", f"source:{index.docs}/notes/** or tags = aviation"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)["hits"]
    assert {Path(h["source"]).name for h in hits} == {"etna.md", "records.jsonl"} and len(hits) == 2
    bad = CliRunner().invoke(cli, ["query", QUESTION, "--home", home, "--where", "year >> 2"])
    assert bad.exit_code == 2 and "Invalid value for '--where': bad filter: expected 'and', 'or' or the end" \
        in bad.output


def test_cli_ls_and_delete_where(index: Any) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    home = str(index.settings.home)
    res = CliRunner().invoke(cli, ["ls", "--home", home, "--json", "--where", "year = 2021"])
    assert res.exit_code == 0, res.output
    assert sorted(d["uri"].rsplit("#", 1)[1] for d in json.loads(res.output)["documents"]) == ["r2", "r3"]
    res = CliRunner().invoke(cli, ["ls", "--home", home, "--json", "--where", "year = 2021",
                                   "--source", "**/*.md"])
    assert json.loads(res.output)["documents"] == []  # every criterion must hold
    res = CliRunner().invoke(cli, ["delete", "--home", home, "--json", "--dry-run", "--where", "tags = aviation"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [d["uri"].rsplit("#", 1)[1] for d in out["documents"]] == ["r1"] and out["deleted"] == 0
    bad = CliRunner().invoke(cli, ["ls", "--home", home, "--where", "tags in"])
    assert bad.exit_code == 2 and "expected '(' after 'tags in'" in bad.output


def test_cli_ingest_tag(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    docs = tmp_path / "docs"
    (docs / "red").mkdir(parents=True)
    (docs / "red" / "a.txt").write_text("Volcanic ash from Mount Etna can disrupt air travel across Europe.")
    (docs / "blue.txt").write_text("Aspirin reduces inflammation by blocking cyclooxygenase enzymes.")
    home = str(tmp_path / "home")
    run = CliRunner().invoke(cli, ["ingest", str(docs), "--home", home, "--json", "--tag", "team=blue"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["tagged"] == 2
    # the second run finds a.txt unchanged and tags it all the same
    run = CliRunner().invoke(cli, ["ingest", str(docs / "red"), "--home", home, "--tag", "team=red",
                                   "--tag", "year=2024"])
    assert run.exit_code == 0 and "tagged 1 document: team=red, year=2024" in run.output, run.output
    res = CliRunner().invoke(cli, ["query", "volcanic ash and aspirin", "--home", home, "--json", "--no-answer",
                                   "--where", "team = red and year = 2024"])
    assert [Path(h["source"]).name for h in json.loads(res.output)["hits"]] == ["a.txt"]
    res = CliRunner().invoke(cli, ["ls", "--home", home, "--json", "--where", "team = blue"])
    assert [Path(d["path"]).name for d in json.loads(res.output)["documents"]] == ["blue.txt"]
    bad = CliRunner().invoke(cli, ["ingest", str(docs), "--home", home, "--tag", "source=x"])
    assert bad.exit_code == 2 and "bad tag key 'source'" in bad.output
