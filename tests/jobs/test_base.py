from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fanrag.errors import ConfigError, JobError
from fanrag.jobs import Job, jobs_for, open_transport
from fanrag.jobs.redis_streams import RedisStreamsTransport, parse_url


def test_job_payload_round_trips_and_names_the_file_never_its_bytes(tmp_path: Path) -> None:
    job = Job(uri="file:///a.md", path="/a.md", content_hash="abc", options={"password": "pw"}, attempts=2)
    data = json.loads(job.to_json())
    assert set(data) == {"uri", "path", "content_hash", "options", "attempts", "not_before"}
    assert Job.from_json(job.to_json()) == job
    assert job.retry(123.0).attempts == 3 and job.retry(123.0).not_before == 123.0


def test_malformed_payload_is_a_job_error() -> None:
    with pytest.raises(JobError, match="malformed"):
        Job.from_json('{"path": "/a.md"}')


def test_jobs_for_expands_directories_one_job_per_file(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.md").write_text("b")
    (tmp_path / "d" / "sub" / "a.txt").write_text("a")
    (tmp_path / "d" / ".hidden").write_text("h")
    single = tmp_path / "one.md"
    single.write_text("1")
    jobs = jobs_for([tmp_path / "d", single], {"password": "x"})
    assert [Path(j.path).name for j in jobs] == ["b.md", "a.txt", "one.md"]
    assert all(j.uri.startswith("file://") and j.options == {"password": "x"} for j in jobs)
    with pytest.raises(JobError, match="no such file"):
        jobs_for([tmp_path / "missing"])


def test_unknown_scheme_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown scheme") as info:
        open_transport("nats://127.0.0.1:4222/ingest-jobs")
    assert info.value.field == "jobs.queue"


def test_url_parameters_split_between_fanrag_and_redis() -> None:
    cfg = parse_url("redis://h:1/2?stream=s&group=g&max_attempts=7&retry_base=0.5&reclaim_idle=9&socket_timeout=3")
    assert (cfg.stream, cfg.group, cfg.max_attempts, cfg.reclaim_idle_s) == ("s", "g", 7, 9.0)
    assert cfg.retry.base_s == 0.5 and cfg.dlq == "s.dlq"
    assert cfg.url == "redis://h:1/2?socket_timeout=3"
    with pytest.raises(ConfigError, match="max_attempts"):
        parse_url("redis://h/0?max_attempts=0")
    with pytest.raises(ConfigError):
        parse_url("redis://h/0?block=soon")


def test_cli_rejects_an_unknown_queue_scheme_as_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanrag.cli import cli

    (tmp_path / "a.md").write_text("a")
    result = CliRunner().invoke(cli, ["submit", str(tmp_path / "a.md"), "--queue", "nats://h:4222/t"])
    assert result.exit_code == 2
    assert "jobs.queue" in result.output and "unknown scheme" in result.output


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fanrag.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    transport = RedisStreamsTransport.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(MissingExtraError, match=r"fanrag\[redis\]"):
        transport.redis  # noqa: B018  (connecting is what needs the package)


def test_sync_and_async_job_sources_are_told_apart(tmp_path: Path) -> None:
    from fanrag.ingest.sources import AsyncJobSource, JobSource, PathSource, SyncJobSource, iterate_source

    (tmp_path / "a.md").write_text("a")
    paths = PathSource([tmp_path])
    stream = open_transport("redis://127.0.0.1:1/0").source()  # a queue consumer: nothing connects yet
    assert isinstance(paths, SyncJobSource) and not isinstance(paths, AsyncJobSource)
    assert isinstance(stream, AsyncJobSource) and not isinstance(stream, SyncJobSource)
    assert isinstance(paths, JobSource) and isinstance(stream, JobSource)  # what Engine.aingest asks
    assert not isinstance([tmp_path / "a.md"], JobSource)  # plain paths: no outcome callbacks

    async def every(source: JobSource) -> list[str]:
        return [Path(src.path).name async for src in iterate_source(source)]
    assert asyncio.run(every(paths)) == ["a.md"]
