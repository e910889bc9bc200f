"""``fanrag mcp``'s refusals before it serves: a missing extra, and ingest asked for without what it needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanrag.cli import cli

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("package", ["mcp", "fastapi"])
def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    res = CliRunner().invoke(cli, ["mcp", "--home", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output == (f"Error: fanrag mcp needs an optional dependency (package {package!r}): "
                          "pip install 'fanrag[mcp]'\n")


@pytest.mark.parametrize(("args", "field"), [
    (["--allow-ingest"], "server.ingest_root"),
    (["--http", "--allow-ingest", "--ingest-root", "."], "server.token"),
    (["--http", "--token", "t"], "server.ingest_root"),
])
def test_ingest_without_what_it_needs_is_a_usage_error(tmp_path: Path, args: list[str], field: str) -> None:
    res = CliRunner(env={"FANRAG_TOKEN": None, "FANRAG_READ_TOKEN": None}).invoke(
        cli, ["mcp", "--home", str(tmp_path / "home"), *args])
    assert res.exit_code == 2 and f"invalid setting {field}" in res.output, res.output
    assert not (tmp_path / "home").exists()  # refused before the index was opened
