"""Scheduling stays bounded whatever a file claims (issue 13, finding 3): a part job is O(1) to describe,
a source has at most MAX_PARTS parts, a failed source's remaining parts are not run, and whatever a job
raises fails that file alone."""

from __future__ import annotations

import pickle
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from fanrag.engine import Engine
from fanrag.ids import source_uri
from fanrag.ingest import loaders
from fanrag.ingest.sources import PartJob, PathSource, SourceFile, SourcePlan
from fanrag.ingest.work import MAX_PARTS, PartResult, Parts, plan_source, process_part, work_config

from ..conftest import make_settings
from .inline import InlineExecutor, run_inline

TEXT = "The lighthouse keeper logs every ship that passes the reef. " * 10


def _source(path: Path) -> SourceFile:
    return SourceFile(path=str(path), uri=source_uri(path), size=path.stat().st_size, mtime=path.stat().st_mtime)


def test_a_part_job_is_o1_to_describe_and_parts_are_capped(tmp_path: Path, embedder) -> None:
    """5M blank lines: 19,532 line ranges of 256, each job carrying all of them (quadratic: the run never
    finished). Now at most MAX_PARTS contiguous ranges, and a job is its range plus a small header."""
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n" * 5_000_000)
    plan = plan_source(_source(path), work_config(make_settings(tmp_path / "home"), embedder))
    assert isinstance(plan, SourcePlan) and plan.units == 5_000_000
    parts = list(plan.parts)
    assert 1 < len(parts) <= MAX_PARTS and len(plan.parts) == len(parts)
    assert parts[0].start == 0 and parts[-1].stop == plan.units  # type: ignore[union-attr]
    assert all(a.stop == b.start for a, b in pairwise(parts))  # type: ignore[union-attr]
    assert len(pickle.dumps(PartJob(plan, len(parts) - 1, parts[-1]))) < 1024


def test_parts_index_like_a_sequence() -> None:
    parts = Parts(units=10, step=4)
    assert [(p.start, p.stop) for p in parts] == [(0, 4), (4, 8), (8, 10)]  # type: ignore[union-attr]
    assert parts[-1] == parts[2] and parts[1:] == [parts[1], parts[2]] and list(Parts(7)) == [None]
    with pytest.raises(IndexError):
        parts[3]


def test_a_count_that_the_file_cannot_hold_fails_at_planning(tmp_path: Path, embedder, monkeypatch) -> None:
    """Whatever a loader's ``units`` says, a unit takes at least a byte: more units than bytes is a lie."""
    path = tmp_path / "lie.jsonl"
    path.write_text('{"text": "one"}\n')
    monkeypatch.setattr(loaders, "units", lambda *a, **kw: 1_048_000)
    reason = plan_source(_source(path), work_config(make_settings(tmp_path / "home"), embedder))
    assert reason == f"{path}: claims 1048000 lines, more than its 16 bytes can hold"


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_special_file_fails_by_its_kind_before_it_is_opened(special: str, tmp_path: Path, embedder) -> None:
    import os

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe.txt"
        os.mkfifo(path)
    reason = plan_source(SourceFile(str(path), source_uri(path)), work_config(make_settings(tmp_path), embedder))
    assert isinstance(reason, str) and "not a regular file" in reason and str(path) in reason


def _collection(path: Path, n: int) -> Path:
    path.write_text("".join(f'{{"_id": "e{i}", "text": "Entry {i}: {TEXT}"}}\n' for i in range(n)))
    return path


def test_a_failed_source_runs_no_more_parts(tmp_path: Path) -> None:
    """Every part of a 20-part collection fails: only the parts already in flight ran (each was a job
    for a worker: 32,750 of them for a lying PDF)."""
    col = _collection(tmp_path / "col.jsonl", 200)

    def failing(fn: Any, args: tuple[Any, ...]) -> Any:
        if fn is process_part:
            return PartResult(job=args[0], error=f"{col}: part {args[0].index} is broken")
        return fn(*args)

    settings = make_settings(tmp_path / "home", pipeline={"jsonl_docs_per_job": 10})
    with Engine.open(settings=settings) as engine:
        executor = InlineExecutor(engine.embedder, failing)
        summary = run_inline(engine, PathSource([col]), executor)
    parts_run = [args for name, args in executor.jobs if name == "process_part"]
    assert len(parts_run) <= 4  # of 20: those in flight (2 slots per worker)
    assert [(p, r.split(" is ")[-1]) for p, r in summary.failed] == [(str(col), "broken")]


def test_whatever_a_loader_raises_fails_that_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A RecursionError (JSON or markup nested too deep) or any loader bug aborted the whole run."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "deep.txt", "c.txt"):
        (docs / name).write_text(f"{name}: {TEXT}")
    real = loaders.load

    def load(path: Any, **kw: Any) -> Any:
        if Path(path).name == "deep.txt":
            raise RecursionError("maximum recursion depth exceeded while decoding")
        return real(path, **kw)

    monkeypatch.setattr(loaders, "load", load)
    with Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        summary = run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder))
    assert summary.ok == 2
    assert summary.failed == [(str(docs / "deep.txt"), "RecursionError: maximum recursion depth exceeded while decoding")]


def test_whatever_a_job_raises_in_the_executor_fails_that_file_alone(tmp_path: Path) -> None:
    """An executor error other than a crashed worker (a result that does not unpickle) aborted the run."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt"):
        (docs / name).write_text(f"{name}: {TEXT}")

    def unpicklable(fn: Any, args: tuple[Any, ...]) -> Any:
        if fn is plan_source and Path(args[0].path).name == "b.txt":
            raise pickle.UnpicklingError("invalid load key")
        return fn(*args)

    with Engine.open(settings=make_settings(tmp_path / "home")) as engine:
        summary = run_inline(engine, PathSource([docs]), InlineExecutor(engine.embedder, unpicklable))
    assert summary.ok == 1 and summary.failed == [(str(docs / "b.txt"), "UnpicklingError: invalid load key")]


def test_a_split_collection_is_checked_for_unchanged_entries_by_the_ledger(tmp_path: Path) -> None:
    """No part job of a split collection carries the collection's committed hashes (the table went with
    every job); unchanged entries are still skipped, and only the changed one is written."""
    col = _collection(tmp_path / "col.jsonl", 60)
    settings = make_settings(tmp_path / "home", pipeline={"jsonl_docs_per_job": 10})
    with Engine.open(settings=settings) as engine:
        assert run_inline(engine, PathSource([col]), InlineExecutor(engine.embedder)).ok == 60
        lines = col.read_text().splitlines()
        lines[7] = '{"_id": "e7", "text": "A changed entry about the harbour."}'
        col.write_text("\n".join(lines) + "\n")
        executor = InlineExecutor(engine.embedder)
        summary = run_inline(engine, PathSource([col]), executor)
    jobs = [args[0] for name, args in executor.jobs if name == "process_part"]
    assert len(jobs) == 6 and all(job.known == {} for job in jobs)
    assert (summary.ok, summary.unchanged, summary.failed) == (1, 59, [])
