"""PathSource, where paths on disk become sources: the root rule (every file resolves inside the root,
named or met in the walk), symlink loops, special files, directories walked once; and ``fanrag ingest
--root`` and special files named on the command line, end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.ingest.sources import PathSource


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a.txt, sub/b.txt and a symlink sub/out.txt to a file beside the root."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("The moon raises the tides twice a day.\n")
    (root / "sub" / "b.txt").write_text("Spring tides follow the full and the new moon.\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "sub" / "out.txt").symlink_to(tmp_path / "secret.txt")
    return root


def names(source: PathSource) -> list[str]:
    return [Path(src.path).name for src in source]


def test_a_symlink_out_of_the_root_is_refused_in_a_walk(tree: Path) -> None:
    source = PathSource([tree], root=tree)
    assert names(source) == ["a.txt", "b.txt"]
    (path, reason), = source.refused
    assert path == str(tree / "sub" / "out.txt")
    assert reason == f"resolves to {tree.parent / 'secret.txt'}, outside the ingest root {tree}"
    # without a root the same walk follows the link: the rule is the root's
    assert names(PathSource([tree])) == ["a.txt", "b.txt", "out.txt"]


def test_a_path_named_outside_the_root_is_refused(tree: Path) -> None:
    source = PathSource([tree / "a.txt", tree / "sub" / "out.txt", tree / ".." / "secret.txt"], root=tree)
    assert names(source) == ["a.txt"]
    assert [Path(p).name for p, _ in source.refused] == ["out.txt", "secret.txt"]


def test_nothing_inside_an_excluded_directory_is_yielded(tree: Path) -> None:
    home = tree / "index-home"
    home.mkdir()
    (home / "fanrag.toml").write_text('[server]\ntoken = "s3cret"\n')
    (tree / "settings.txt").symlink_to(home / "fanrag.toml")
    source = PathSource([tree, home / "fanrag.toml"], root=tree, exclude=[home])
    assert names(source) == ["a.txt", "b.txt"]
    assert sorted(Path(p).name for p, _ in source.refused) == ["fanrag.toml", "out.txt", "settings.txt"]
    assert all("excluded directory" in r for p, r in source.refused if not p.endswith("out.txt"))


def test_a_symlink_inside_the_root_is_followed(tree: Path) -> None:
    (tree / "alias.txt").symlink_to(tree / "sub" / "b.txt")
    source = PathSource([tree / "alias.txt"], root=tree)
    (src,) = list(source)
    assert src.uri == (tree / "sub" / "b.txt").as_uri() and source.refused == []


def test_symlink_loops_and_dangling_links_are_refused_not_raised(tree: Path) -> None:
    (tree / "loop.txt").symlink_to(tree / "loop.txt")
    (tree / "ping.txt").symlink_to(tree / "pong.txt")
    (tree / "pong.txt").symlink_to(tree / "ping.txt")
    (tree / "gone.txt").symlink_to(tree / "nowhere.txt")
    source = PathSource([tree])
    assert names(source) == ["a.txt", "b.txt", "out.txt"]
    reasons = {Path(p).name: r for p, r in source.refused}
    assert set(reasons) == {"loop.txt", "ping.txt", "pong.txt", "gone.txt"}
    assert reasons["loop.txt"].startswith("symlink loop") and reasons["ping.txt"].startswith("symlink loop")
    assert "dangling symlink" in reasons["gone.txt"]
    named = PathSource([tree / "loop.txt", tree / "nowhere.txt"])
    assert names(named) == [] and named.missing == [str(tree / "nowhere.txt")]
    assert named.refused[0][1].startswith("symlink loop")


def test_bad_names_are_refused_not_raised(tree: Path) -> None:
    source = PathSource([str(tree) + "/a\0b", str(tree / ("x" * 300)), "\ud800"])
    assert names(source) == []
    assert [r.split(":")[0] for _, r in source.refused] == ["not a valid file name", "cannot resolve",
                                                             "not a valid file name"]


def test_a_directory_is_walked_once(tree: Path) -> None:
    (tree / "again").symlink_to(tree / "sub", target_is_directory=True)
    source = PathSource([tree, tree / "sub", tree / "again", tree / "." / "sub" / ".."])
    assert names(source) == ["a.txt", "b.txt", "out.txt"]  # sub/ reached four ways, walked once


def test_special_files_are_yielded_for_the_planner_to_fail(tree: Path) -> None:
    os.mkfifo(tree / "pipe.txt")
    source = PathSource([tree / "pipe.txt", tree], root=tree)
    assert names(source) == ["pipe.txt", "a.txt", "pipe.txt", "b.txt"]
    assert [Path(p).name for p, _ in source.refused] == ["out.txt"]


# ------------------------------------------------------------------------------------- end to end (CLI)

def run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["ingest", *args, "--json", "--workers", "1"])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.timeout(180)
def test_ingest_root_confines_the_cli(tree: Path, tmp_path: Path) -> None:
    code, summary = run(str(tree), "--root", str(tree), "--home", str(tmp_path / "home"))
    assert code == 1
    assert summary["ok"] == 2
    assert [(Path(f["source"]).name, "outside the ingest root" in f["reason"]) for f in summary["failed"]] == [
        ("out.txt", True)]
    code, summary = run(str(tree / ".." / "secret.txt"), "--root", str(tree), "--home", str(tmp_path / "home"))
    assert code == 1 and summary["ok"] == 0 and len(summary["failed"]) == 1


@pytest.mark.timeout(180)
def test_special_files_named_on_the_command_line_fail_by_name(tree: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, summary = run(str(fifo), "/dev/zero", str(tree / "a.txt"), "--home", str(tmp_path / "home"))
    assert code == 1  # it was "0 sources" and exit 0; a read would block (FIFO) or never end (/dev/zero)
    assert summary["ok"] == 1
    failed = {f["source"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {str(fifo), "/dev/zero"}
    assert all("not a regular file" in reason for reason in failed.values())
