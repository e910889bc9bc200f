from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fanrag.cli import cli


def test_ingest_json_summary_exit_code_and_status(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Tides\n\nThe moon's gravity raises tides on Earth. " * 5)
    (docs / "bad.txt").write_bytes(b"\x00\x01\x02binary\xff\xfe" * 50)
    home = str(tmp_path / "home")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(docs), "--home", home, "--json", "--workers", "1"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] == 1
    assert [Path(f["source"]).name for f in summary["failed"]] == ["bad.txt"]
    assert "binary" in summary["failed"][0]["reason"]

    status = runner.invoke(cli, ["status", "--home", home, "--json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert info["vectors"] == info["keyword_chunks"] > 0


def test_config_error_is_a_usage_error_naming_the_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--home", str(tmp_path / "h"), "--workers", "-3"])
    assert result.exit_code == 2
    assert "pipeline.workers" in result.output
