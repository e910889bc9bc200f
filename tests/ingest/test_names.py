"""Names are data (issue 13, finding 2): a file name that is not UTF-8, holds a newline or is a symlink
loop neither crashes a run nor splits a line. Names are kept losslessly in source URIs, shown escaped
everywhere a person reads them, and stored by both metadata stores whatever a ``str`` holds."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanrag.engine import Engine
from fanrag.ids import path_of, source_uri
from fanrag.ingest.summary import IngestSummary
from fanrag.names import one_line, shown, storable, storable_json
from fanrag.stores.base import MetaStore, SourceRecord
from fanrag.types import Document

from ..conftest import make_settings
from ..servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures

GOOD = "The harbour master keeps the tide tables for the whole coast. " * 20
NOT_UTF8 = os.fsdecode(b"caf\xe9-menu.txt")  # latin-1 bytes: \udce9 in Python's str


# ------------------------------------------------------------------------------------------ the two forms

@pytest.mark.parametrize(("name", "expected"), [
    ("plain name.txt", "plain name.txt"),
    (NOT_UTF8, "caf\\xe9-menu.txt"),
    ("new\nline\r\ttab.txt", "new\\nline\\r\\ttab.txt"),
    ("esc-\x1b[31m.txt", "esc-\\x1b[31m.txt"),
    ("bidi-\u202etxt.exe", "bidi-\\u202etxt.exe"),
    ("lone-\ud800.txt", "lone-\\ud800.txt"),
    ("emoji-\U0001f30a é.txt", "emoji-\U0001f30a é.txt"),
])
def test_shown_is_one_printable_line(name: str, expected: str) -> None:
    assert shown(name) == expected
    assert shown(shown(name)) == shown(name)  # idempotent: a reason already shown is not escaped twice
    assert len(shown(name).splitlines()) == 1
    shown(name).encode("utf-8")  # no surrogate left


def test_storable_escapes_only_surrogates_and_keeps_json_valid() -> None:
    assert storable(f"{NOT_UTF8}\nline") == "caf\\xe9-menu.txt\nline"
    text = json.dumps({"name": NOT_UTF8, "lone": "\ud800", "ok": "é\n"}, ensure_ascii=False)
    assert json.loads(storable_json(text)) == {"name": "caf\\xe9-menu.txt", "lone": "\\ud800", "ok": "é\n"}


def test_one_line_escapes_the_name_before_it_cuts_the_message() -> None:
    path = "/data/evil\nname.txt"
    message = f"{path}: binary content\nTraceback (most recent call last): ..."
    assert one_line(message, path) == "/data/evil\\nname.txt: binary content"
    assert one_line("no text", path) == "/data/evil\\nname.txt: no text"  # named when the message is not


def test_a_source_uri_is_lossless_and_never_raises(tmp_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"a\xff b\n#1?.txt")
    odd.write_text(GOOD)
    uri = source_uri(odd)
    assert uri.isascii() and "\n" not in uri
    assert os.fsencode(path_of(uri)) == os.fsencode(odd)  # type: ignore[arg-type]  # byte for byte
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    assert path_of(source_uri(tmp_path / "loop-a")) == tmp_path / "loop-a"  # raised RuntimeError: Symlink loop
    assert path_of(f"{source_uri(odd)}#entry-7") == odd and path_of("s3://bucket/key") is None


# ------------------------------------------------------------------------------------------ the stores

@pytest.fixture(params=["sqlite", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    if request.param == "sqlite":
        from fanrag.stores.meta_sqlite import SqliteMetaStore

        store: MetaStore = SqliteMetaStore(tmp_path / "meta.sqlite")
    else:
        from fanrag.stores.meta_postgres import PostgresMetaStore

        store = PostgresMetaStore(request.getfixturevalue("pg_database"))
    yield store
    store.close()


def test_the_metadata_stores_take_any_str(meta: MetaStore, tmp_path: Path) -> None:
    """A title from an undecodable file name, a JSON lone surrogate in metadata, a reason naming the file:
    SQLite raised UnicodeEncodeError in mark_pending and the whole run (and every rerun) died."""
    uri = source_uri(tmp_path / NOT_UTF8)
    doc = Document(doc_id="d1", uri=uri, source=uri, content_hash="h", text="t", title=Path(NOT_UTF8).stem,
                   metadata={"from": "\ud800", "file": NOT_UTF8})
    meta.mark_pending([doc])
    meta.commit([doc], [], {})
    meta.mark_failed(uri, uri, f"{NOT_UTF8}: binary")
    meta.put_source(SourceRecord(uri=uri, content_hash="h", size=1, mtime=1.0, status="failed",
                                 error=f"{NOT_UTF8}: binary"))
    rec = meta.get_document("d1")
    assert rec is not None and rec.title == "caf\\xe9-menu" and rec.metadata == {
        "from": "\\ud800", "file": "caf\\xe9-menu.txt"}
    source = meta.get_source(uri)
    assert source is not None and source.error == "caf\\xe9-menu.txt: binary"
    assert [d.doc_id for d in meta.documents(source=uri)] == ["d1"]


# ------------------------------------------------------------------------------------------ a whole run

@pytest.fixture
def odd_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / NOT_UTF8).write_text(GOOD)
    (root / "good\nname.txt").write_text(GOOD.replace("harbour", "lighthouse"))
    (root / "bad\nname.txt").write_bytes(bytes(range(256)) * 8)
    (root / "fine.txt").write_text(GOOD.replace("harbour", "ferry"))
    os.symlink("loop-b.txt", root / "loop-a.txt")
    os.symlink("loop-a.txt", root / "loop-b.txt")
    return root


def test_odd_names_neither_crash_the_run_nor_split_a_line(odd_corpus: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    with Engine.open(settings=settings) as engine:
        summary = engine.ingest([odd_corpus])
        committed = {path_of(d.source) for d in engine.stores.meta.documents(status="committed")}
        assert committed == {odd_corpus / n for n in (NOT_UTF8, "good\nname.txt", "fine.txt")}
        failed = dict(summary.failed)
        assert "binary" in failed[str(odd_corpus / "bad\nname.txt")]
        assert all("\n" not in line for line in _lines(summary))
        shown_sources = [f["source"] for f in summary.to_dict()["failed"]]
        assert f"{odd_corpus}/bad\\nname.txt" in shown_sources, shown_sources
        again = engine.ingest([odd_corpus], prune=True)  # prune found the undecodable name gone: it is not
        assert (again.ok, again.removed, again.unchanged) == (0, 0, 3)


def _lines(summary: IngestSummary) -> list[str]:
    return [f"{shown(s)}: {shown(r)}" for s, r in summary.failed]


def test_the_cli_prints_one_escaped_line_per_failure(odd_corpus: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    result = CliRunner().invoke(cli, ["ingest", str(odd_corpus), "--home", str(tmp_path / "home"), "--quiet"])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 3 and f"FAILED {odd_corpus}/bad\\nname.txt: binary content" in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("name.txt")]  # no split line
