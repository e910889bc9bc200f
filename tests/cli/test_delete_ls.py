"""``fanrag ls``, ``fanrag delete`` and ``fanrag completion``, on a real index; and the selection they
share (``fanrag.selection``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.engine import Engine
from fanrag.ids import document_id
from fanrag.selection import Selection, select
from fanrag.stores.base import DocumentRecord
from fanrag.types import Document

pytestmark = pytest.mark.timeout(180)

DOCS = {
    "docs/intro.md": "# Intro\n\nThe moon's gravity raises two tides a day on most coasts.\n",
    "docs/guide/setup.md": "# Setup\n\nInstall the volcano monitor before the eruption season.\n",
    "docs/notes.txt": "Aspirin blocks cyclooxygenase enzymes and thins the blood.\n",
    "other/readme.md": "# Readme\n\nHNSW builds layers of proximity graphs for nearest neighbour search.\n",
}
BAD = b"\x00\x01\x02binary\xff\xfe" * 50  # other/bad.txt: fails to load
ENTRIES = [{"_id": "q1", "title": "First entry", "text": "Glaciers carve valleys over thousands of years."},
           {"_id": "q2", "title": "Second entry", "text": "Coral reefs shelter a quarter of marine species."}]


def build(tmp: Path) -> SimpleNamespace:
    """An index of DOCS and a two-entry JSONL collection under ``tmp``, and one failed document.

    ``other/bad.txt`` fails to load, so it never becomes a document (it is counted in the failures); a
    document is ``failed`` when a write of it fails after it was marked pending, which ``broken.md`` is
    made to go through with the store's own calls."""
    for name, text in DOCS.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    (tmp / "other" / "bad.txt").write_bytes(BAD)
    (tmp / "other" / "entries.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ENTRIES))
    home = tmp / "home"
    res = CliRunner().invoke(cli, ["ingest", str(tmp / "docs"), str(tmp / "other"), "--home", str(home),
                                   "--workers", "1", "--quiet", "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["ok"] == 6, res.output  # bad.txt failed
    broken = (tmp / "other" / "broken.md").as_uri()
    with Engine.open(home) as engine:
        engine.stores.meta.mark_pending([Document(document_id(broken), broken, broken, "h", "text")])
        engine.stores.meta.mark_failed(broken, broken, "embedding failed: the endpoint went away")
    return SimpleNamespace(home=home, root=tmp)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: Any) -> SimpleNamespace:
    """An index the listing tests only read."""
    return build(tmp_path_factory.mktemp("ls"))


def fanrag(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input)


def listed(home: Path, *args: str) -> list[dict[str, Any]]:
    res = fanrag("ls", "--home", str(home), "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["documents"]


def paths(docs: list[dict[str, Any]]) -> list[str]:
    return [d["path"] for d in docs]


# ------------------------------------------------------------------------------------------------- ls


def test_ls_lists_every_document_with_its_state(shared: SimpleNamespace) -> None:
    res = fanrag("ls", "--home", str(shared.home))
    assert res.exit_code == 0, res.output
    header, *rows = res.output.splitlines()
    assert header.split() == ["DOC_ID", "STATUS", "CHUNKS", "PAGES", "UPDATED", "SOURCE", "TITLE"]
    assert len(rows) == 7 and not any("bad.txt" in r for r in rows)
    intro = next(r for r in rows if r.rstrip().endswith("intro.md  Intro"))
    assert re.match(r"d\w{20}  committed +1 +0  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  /", intro), intro
    failed = next(r for r in rows if "broken.md" in r)
    assert " failed " in failed and failed.endswith("broken.md  ! embedding failed: the endpoint went away")
    entries = [r for r in rows if "entries.jsonl#" in r]
    assert [r.rsplit("  ", 1)[1] for r in entries] == ["First entry", "Second entry"]


def test_ls_json_status_source_and_paging(shared: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = listed(shared.home)
    assert len(docs) == 7 and {"doc_id", "status", "source", "uri", "title", "n_chunks", "n_pages", "updated_at",
                                "error", "path"} <= set(docs[0])
    assert paths(listed(shared.home, "--status", "failed")) == [str(shared.root / "other/broken.md")]
    monkeypatch.chdir(shared.root)  # a relative glob is taken from here
    assert paths(listed(shared.home, "--source", "docs/**/*.md")) == [
        str(shared.root / "docs/guide/setup.md"), str(shared.root / "docs/intro.md")]
    assert paths(listed(shared.home, "--source", "docs/*.md")) == [str(shared.root / "docs/intro.md")]
    assert len(listed(shared.home, "--source", "**/*.md")) == 4
    assert paths(listed(shared.home, "--source", "**/*.md", "--status", "failed")) == [
        str(shared.root / "other/broken.md")]
    assert len(listed(shared.home, "--source", "other/entries.jsonl")) == 2  # a collection: its entries
    pages = [listed(shared.home, "--limit", "3", "--offset", str(o)) for o in (0, 3, 6)]
    assert [d["doc_id"] for page in pages for d in page] == [d["doc_id"] for d in docs]
    globbed = listed(shared.home, "--source", "**/*", "--limit", "2", "--offset", "1")
    assert [d["doc_id"] for d in globbed] == [d["doc_id"] for d in docs[1:3]]


def test_ls_on_no_index_is_one_line(tmp_path: Path) -> None:
    res = fanrag("ls", "--home", str(tmp_path / "nowhere"))
    assert res.exit_code == 1 and "no index here" in res.output and len(res.output.splitlines()) == 1


# --------------------------------------------------------------------------------------------- delete


def status_of(home: Path) -> dict[str, Any]:
    with Engine.open(home, mode="read") as engine:
        return engine.status().to_dict()


def test_delete_dry_run_then_confirmation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idx = build(tmp_path)
    before = status_of(idx.home)
    monkeypatch.chdir(tmp_path)
    home = ("--home", str(idx.home))
    dry = fanrag("delete", "--source", "docs/**/*.md", "--dry-run", *home)
    assert dry.exit_code == 0, dry.output
    assert "setup.md" in dry.output and "intro.md" in dry.output and "notes.txt" not in dry.output
    assert dry.output.splitlines()[-1] == "would delete 2 documents (dry run)"
    declined = fanrag("delete", "--source", "docs/**/*.md", *home, input="n\n")
    assert declined.exit_code == 1 and "Delete 2 documents from every store? [y/N]" in declined.output
    assert "Aborted" in declined.output and status_of(idx.home) == before

    done = fanrag("delete", "--source", "docs/**/*.md", *home, input="y\n")
    assert done.exit_code == 0 and done.output.splitlines()[-1] == "deleted 2 documents", done.output
    after = status_of(idx.home)
    assert after["documents"] == before["documents"] - 2 and after["chunks"] == before["chunks"] - 2
    assert after["vectors"] == after["keyword_chunks"] == after["chunks"]  # gone from every store
    assert paths(listed(idx.home, "--source", "docs/**")) == [str(tmp_path / "docs/notes.txt")]
    answer = fanrag("query", "When does the volcano erupt?", *home, "--json", "--no-answer")
    assert all("setup.md" not in h["source"] for h in json.loads(answer.output)["hits"])


def test_delete_by_id_names_unknown_ids(tmp_path: Path) -> None:
    idx = build(tmp_path)
    docs = listed(idx.home, "--status", "committed")
    keep, gone = docs[0], docs[1]
    res = fanrag("delete", gone["doc_id"], "dnot-an-id", "--home", str(idx.home), "--yes", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["deleted"] == 1 and out["missing"] == ["dnot-an-id"] and not out["dry_run"]
    assert [d["doc_id"] for d in out["documents"]] == [gone["doc_id"]]
    assert "fanrag: no document 'dnot-an-id'" in res.stderr
    left = {d["doc_id"] for d in listed(idx.home)}
    assert keep["doc_id"] in left and gone["doc_id"] not in left
    # criteria combine: an id that is not failed is not deleted by --status failed
    both = fanrag("delete", keep["doc_id"], "--status", "failed", "--home", str(idx.home), "--yes")
    assert both.exit_code == 1 and "matching --source/--status" in both.output
    assert keep["doc_id"] in {d["doc_id"] for d in listed(idx.home)}
    failed = fanrag("delete", "--status", "failed", "--home", str(idx.home), "--yes")
    assert failed.exit_code == 0 and failed.output.splitlines()[-1] == "deleted 1 document"


def test_delete_needs_criteria_and_a_free_index(tmp_path: Path) -> None:
    idx = build(tmp_path)
    res = fanrag("delete", "--home", str(idx.home), "--yes")
    assert res.exit_code == 2 and "name what to delete" in res.output
    nothing = fanrag("delete", "--source", "/nowhere/**", "--home", str(idx.home), "--yes")
    assert nothing.exit_code == 0 and nothing.output == "no documents match\n"
    with Engine.open(idx.home):  # another writer holds the lock
        locked = fanrag("delete", "--status", "failed", "--home", str(idx.home), "--yes")
    assert locked.exit_code == 1 and "being written by another process" in locked.output
    assert "Traceback" not in locked.output and len(listed(idx.home, "--status", "failed")) == 1


# ------------------------------------------------------------------------------------------ selection


def record(source: str, status: str = "committed", doc_id: str = "d1") -> DocumentRecord:
    return DocumentRecord(doc_id=doc_id, uri=source, source=source, content_hash="h", status=status)


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("/a/**/*.md", "/a/x.md", True),
    ("/a/**/*.md", "/a/b/c/x.md", True),
    ("/a/**/*.md", "/ab/x.md", False),
    ("/a/*.md", "/a/b/x.md", False),  # * stays within a directory
    ("**/*.md", "/x/y.md", True),
    ("/a/**", "/a/b/c", True),
    ("/a/[!x]?.txt", "/a/yz.txt", True),
    ("/a/[!x]?.txt", "/a/xz.txt", False),
    ("/a/[]]b", "/a/]b", True),
    ("/a/[a-c]", "/a/b", True),
    ("/a/[^b]", "/a/c", False),  # ^ is a plain character in a class (as Python's fnmatch takes it)
    ("/a/[^b]", "/a/^", True),
    ("/a/[", "/a/[", True),  # an unclosed [ is a plain character
    ("/a/x.(md)+", "/a/x.(md)+", True),  # regular expression characters are plain
    ("docs/*.md", "/cwd/docs/x.md", True),
    ("./docs/*.md", "/cwd/docs/x.md", True),  # . and .. as the shell takes them
    ("../other/**", "/other/a/x.md", True),
    ("/a/caf\udce9.txt", "/a/caf\udce9.txt", True),  # a name that is not UTF-8, byte for byte
])
def test_source_globs(pattern: str, path: str, matches: bool) -> None:
    uri = Path(path).as_uri()
    assert Selection(source=pattern, cwd="/cwd").matches(record(uri)) is matches


def test_selection_checks_its_status_and_knows_when_it_is_empty() -> None:
    assert Selection().empty and not Selection(status="failed").empty and not Selection(doc_ids=("d",)).empty
    assert not Selection(status="failed").matches(record("file:///a", status="committed"))
    with pytest.raises(ValueError, match="status must be one of"):
        Selection(status="gone")


def test_select_pages_past_one_store_call(shared: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fanrag.selection.PAGE", 2)  # 7 documents: four store pages
    with Engine.open(shared.home, mode="read") as engine:
        meta = engine.stores.meta
        every = select(meta, Selection())
        globbed = select(meta, Selection(source="/**"))
        ids = select(meta, Selection(doc_ids=(every[3].doc_id, every[1].doc_id, every[3].doc_id)))
    assert globbed == every and len(every) == 7
    assert ids == [every[3], every[1]]  # in the order asked, once each


# ------------------------------------------------------------------------------------------ completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script(shell: str) -> None:
    res = fanrag("completion", shell)
    assert res.exit_code == 0 and "_FANRAG_COMPLETE" in res.output and f"{shell}_complete" in res.output


def test_the_script_completes_commands_and_options() -> None:
    def complete(words: str) -> list[str]:
        env = {"_FANRAG_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        res = CliRunner().invoke(cli, [], prog_name="fanrag", env=env)
        return [line.split(",", 1)[1] for line in res.output.splitlines()]

    assert {"delete", "ls"} <= set(complete("fanrag l")) | set(complete("fanrag d"))
    assert "--dry-run" in complete("fanrag delete --d")
    assert complete("fanrag ls --status f") == ["failed"]


def test_every_command_is_in_docs_cli_md() -> None:
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    group = cli if isinstance(cli, click.Group) else None
    assert group is not None
    missing = [name for name in group.commands if f"fanrag {name}" not in text]
    assert not missing, f"undocumented commands: {missing}"
