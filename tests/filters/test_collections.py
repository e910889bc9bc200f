"""Collections: several in one home, queried alone or together, with their own statistics, deleted from
every store; a collection is the ``collection`` metadata value (``fanrag ingest --collection``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.engine import Engine

TEXTS = {
    "a": {"etna.txt": "Mount Etna erupted; volcanic ash closed the airport of Catania.",
          "vesuvius.txt": "Vesuvius buried Pompeii under volcanic ash in 79 AD."},
    "b": {"krakatoa.txt": "Krakatoa's volcanic ash darkened skies around the world in 1883."},
    "default": {"fuji.txt": "Mount Fuji last erupted in 1707 and spread volcanic ash over Edo."},
}
QUESTION = "which volcano spread volcanic ash"


def invoke(*args: str) -> Any:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.output) if "--json" in args else res.output


def names(hits: list[dict[str, Any]]) -> set[str]:
    return {Path(h["source"]).name for h in hits}


def test_collections_are_isolated_queried_together_counted_and_deleted(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    for collection, files in TEXTS.items():
        folder = tmp_path / collection
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        extra = [] if collection == "default" else ["--collection", collection]
        invoke("ingest", str(folder), "--home", home, "--json", *extra)

    def query(*collections: str) -> set[str]:
        flags = [arg for c in collections for arg in ("--collection", c)]
        return names(invoke("query", QUESTION, "--home", home, "--json", "--no-answer", *flags)["hits"])

    assert query("a") == {"etna.txt", "vesuvius.txt"}
    assert query("b") == {"krakatoa.txt"}
    assert query("default") == {"fuji.txt"}
    assert query("a", "default") == {"etna.txt", "vesuvius.txt", "fuji.txt"}
    assert query() == {"etna.txt", "vesuvius.txt", "krakatoa.txt", "fuji.txt"}
    assert query("nope") == set()
    stats = invoke("status", "--home", home, "--json", "--collection", "a")
    assert (stats["documents"], stats["sources"]) == (2, 2) and stats["chunks"] >= 2

    # a changed file re-ingested without --collection stays in its collection
    (tmp_path / "a" / "etna.txt").write_text("Mount Etna erupted again; volcanic ash fell on Catania.")
    invoke("ingest", str(tmp_path / "a"), "--home", home, "--json")
    assert query("a") == {"etna.txt", "vesuvius.txt"}

    with Engine.open(home, mode="read") as engine:
        before = engine.status()
    out = invoke("delete", "--home", home, "--json", "--yes", "--collection", "b")
    assert [Path(d["path"]).name for d in out["documents"]] == ["krakatoa.txt"] and out["deleted"] == 1
    with Engine.open(home, mode="read") as engine:
        after = engine.status()
    gone = before.chunks - after.chunks
    assert gone >= 1 and before.vectors - after.vectors == gone == before.keyword_chunks - after.keyword_chunks
    assert query("b") == set() and query("a") == {"etna.txt", "vesuvius.txt"}
    listed = invoke("ls", "--home", home, "--json", "--collection", "default")
    assert [Path(d["path"]).name for d in listed["documents"]] == ["fuji.txt"]


def test_http_query_takes_collections(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app
    from fanrag.settings import Settings

    home = tmp_path / "home"
    for collection in ("a", "b"):
        folder = tmp_path / collection
        folder.mkdir()
        for name, text in TEXTS[collection].items():
            (folder / name).write_text(text)
        invoke("ingest", str(folder), "--home", str(home), "--json", "--collection", collection)
    settings = Settings.load(home=home, env={})
    with Engine.open(settings=settings, mode="read") as engine, TestClient(create_app(settings, engine)) as client:
        body = {"query": QUESTION, "generate": False}
        r = client.post("/query", json={**body, "collection": ["b"]})
        assert r.status_code == 200 and names(r.json()["hits"]) == {"krakatoa.txt"}
        r = client.post("/query", json={**body, "collection": ["a"], "filter": "source:**/etna.txt"})
        assert r.status_code == 200 and names(r.json()["hits"]) == {"etna.txt"}
        assert client.post("/query", json={**body, "collection": ["a b"]}).status_code == 422
