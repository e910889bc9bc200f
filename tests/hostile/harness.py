"""Run ``fanrag ingest`` as a user does (a subprocess) under a wall-clock and a memory bound, measured on
the whole process tree (the CLI, its forkserver and its workers) with psutil, and read back what the
index holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fanrag.settings import Settings
from fanrag.stores import open_stores

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int | None  # None: killed for exceeding a bound
    stdout: str
    stderr: str
    wall_s: float
    peak_rss: int  # bytes, summed over the process tree at its largest
    exceeded: str = ""  # which bound it was killed for

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary (the last stdout line)."""
        assert self.returncode is not None, self.exceeded
        lines = self.stdout.strip().splitlines()
        assert lines, f"no summary on stdout; stderr: {self.stderr[-2000:]}"
        return json.loads(lines[-1])


def ingest(paths: list[str], home: Path, *, wall_s: float, rss: int, json_out: bool = True,
           extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Outcome:
    """``fanrag ingest PATHS --home HOME`` (2 workers); killed (with every descendant) past a bound.
    ``env``: settings for this run (``FANRAG_SECTION__FIELD``)."""
    cmd = [sys.executable, "-m", "fanrag.cli", "ingest", "--home", str(home), "--quiet", "--workers", "2",
           *(["--json"] if json_out else []), *extra, "--", *paths]
    out, err = home.parent / f"{home.name}.stdout", home.parent / f"{home.name}.stderr"
    t0 = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        peak, exceeded = _watch(proc, t0 + wall_s, rss)
    return Outcome(None if exceeded else proc.returncode, out.read_text(errors="replace"),
                   err.read_text(errors="replace"), time.monotonic() - t0, peak, exceeded)


def _watch(proc: subprocess.Popen[bytes], deadline: float, rss: int) -> tuple[int, str]:
    """Sample the tree's RSS until the process ends; kill the tree past ``deadline`` or ``rss``."""
    root = psutil.Process(proc.pid)
    peak, tree = 0, [root]
    while proc.poll() is None:
        tree = _tree(root) or tree
        peak = max(peak, _rss(tree))
        over = ("wall" if time.monotonic() > deadline else "") or ("rss" if peak > rss else "")
        if over:
            for p in tree:
                _kill(p)
            proc.wait()
            return peak, f"{over}: {peak / GIB:.2f} GiB peak RSS after {time.monotonic() - deadline:+.0f} s past the limit"
        time.sleep(0.1)
    return peak, ""


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss(tree: list[psutil.Process]) -> int:
    total = 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass


@dataclass(frozen=True, slots=True)
class Index:
    """What an index holds, read without an embedder or the writer lock."""

    sources: dict[str, tuple[str, int]]  # source uri -> (status, documents)
    committed_docs: dict[str, str]  # doc_id -> uri
    pending: int
    meta_chunks: int
    vectors: int
    keywords: int
    graph_chunks: int  # distinct chunks with an entity mention

    @property
    def consistent(self) -> bool:
        return self.meta_chunks == self.vectors == self.keywords and self.pending == 0

    def counts(self) -> dict[str, int]:
        return {"meta": self.meta_chunks, "vectors": self.vectors, "keywords": self.keywords,
                "graph_chunks": self.graph_chunks, "pending": self.pending}


def read_index(home: Path) -> Index:
    settings = Settings.load(home=home, env={})
    with open_stores(settings, mode="read") as s:
        docs = s.meta.documents()
        committed = [d for d in docs if d.status == "committed"]
        return Index(
            sources={r.uri: (r.status, r.n_documents) for r in s.meta.sources()},
            committed_docs={d.doc_id: d.uri for d in committed},
            pending=sum(d.status == "pending" for d in docs),
            meta_chunks=sum(d.n_chunks for d in committed),
            vectors=s.vectors.count(), keywords=s.keywords.count(),
            graph_chunks=s.graph.stats()["chunks"])
