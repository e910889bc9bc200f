"""End-to-end ingestion on the embedded stores: idempotency, replacement, prune, bad input, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanrag.engine import Engine
from fanrag.ingest.sources import PathSource

from ..conftest import ROOT, make_settings

FIXTURES = ROOT / "tests" / "fixtures"

TEXTS = {
    "alpha.txt": "Alpha particles are helium nuclei. " * 100 + "\n\nThey are stopped by paper.\n",
    "beta.md": "# Beta decay\n\nBeta decay emits an electron or a positron.\n\n## Detection\n\n"
               + "Geiger counters detect beta radiation. " * 30,
    "gamma.html": "<html><head><title>Gamma rays</title></head><body><nav>Home | About</nav>"
                  "<main><h1>Gamma rays</h1><p>" + "Gamma rays are high-energy photons. " * 30
                  + "</p></main><footer>Copyright</footer></body></html>",
}


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        (root / name).write_text(text, encoding="utf-8")
    shutil.copy(FIXTURES / "three-pages.pdf", root / "manual.pdf")
    return root


def inventory(engine: Engine) -> dict[str, int]:
    """Chunk counts per store; duplicates or stale chunks anywhere make them disagree with meta."""
    meta = engine.stores.meta
    committed = sum(d.n_chunks for d in meta.documents(status="committed"))
    return {"meta": committed, "vectors": engine.stores.vectors.count(),
            "keywords": engine.stores.keywords.count()}


def assert_consistent(engine: Engine) -> dict[str, int]:
    inv = inventory(engine)
    assert inv["meta"] == inv["vectors"] == inv["keywords"], inv
    return inv


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def settings(tmp_path: Path):
    # Tiny page threshold so the sample PDF exercises the page-range fan-out and merge.
    return make_settings(tmp_path / "home", pipeline={"pdf_page_threshold": 2, "pages_per_range": 1})


def test_ingest_then_reingest_is_a_noop(corpus: Path, settings) -> None:
    with Engine.open(settings=settings) as engine:
        first = engine.ingest([corpus])
        assert first.failed == []
        n_docs = len(list(corpus.iterdir()))
        assert first.ok == n_docs and first.chunks > n_docs
        inv = assert_consistent(engine)
        second = engine.ingest([corpus])
        assert (second.ok, second.chunks, second.unchanged, second.failed) == (0, 0, n_docs, [])
        assert assert_consistent(engine) == inv


def test_touched_but_unchanged_file_is_not_rewritten(corpus: Path, settings) -> None:
    with Engine.open(settings=settings) as engine:
        engine.ingest([corpus])
        os.utime(corpus / "alpha.txt", (time.time() + 5, time.time() + 5))
        again = engine.ingest([corpus])
        assert again.ok == 0 and again.unchanged == len(list(corpus.iterdir()))


def test_changed_document_replaces_its_chunks_everywhere(corpus: Path, settings) -> None:
    with Engine.open(settings=settings) as engine:
        engine.ingest([corpus])
        before = assert_consistent(engine)
        (corpus / "alpha.txt").write_text("Completely new text about neutrinos and their oscillations.\n")
        summary = engine.ingest([corpus])
        assert summary.ok == 1 and summary.unchanged == len(list(corpus.iterdir())) - 1
        after = assert_consistent(engine)
        assert after["meta"] < before["meta"]
        hits = engine.stores.keywords.search("helium nuclei", 10)
        assert hits == [], "stale chunks of the old version are still indexed"
        assert engine.stores.keywords.search("neutrinos", 10)


def test_prune_removes_documents_whose_source_is_gone(corpus: Path, settings) -> None:
    with Engine.open(settings=settings) as engine:
        engine.ingest([corpus])
        (corpus / "beta.md").unlink()
        summary = engine.ingest([corpus], prune=True)
        assert summary.removed == 1
        assert_consistent(engine)
        assert not engine.stores.keywords.search("Geiger", 10)


def test_bad_input_is_reported_and_good_files_are_committed(corpus: Path, settings) -> None:
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "junk.txt").write_bytes(bytes(range(256)) * 8)
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1") * 20)
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer garbage")
    with Engine.open(settings=settings) as engine:
        summary = engine.ingest([corpus, corpus / "missing.txt"])
        failed = {Path(s).name: r for s, r in summary.failed}
        assert set(failed) == {"empty.txt", "junk.txt", "latin1.txt", "broken.pdf", "missing.txt"}, failed
        assert all(reason and "\n" not in reason for reason in failed.values())
        assert summary.ok == len(list(corpus.iterdir())) - 4
        assert summary.exit_code == 1
        assert_consistent(engine)
        recorded = {Path(s.uri).name for s in engine.stores.meta.sources() if s.status == "failed"}
        assert {"empty.txt", "junk.txt", "latin1.txt", "broken.pdf"} <= recorded


def test_jsonl_collection_entries_are_documents(tmp_path: Path, settings) -> None:
    lines = [{"_id": f"e{i}", "title": f"Entry {i}", "text": f"Entry number {i} talks about topic {i % 3}."}
             for i in range(30)]
    path = tmp_path / "col.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    s = settings.replace(pipeline={"jsonl_docs_per_job": 7})  # several line ranges per file
    with Engine.open(settings=s) as engine:
        assert engine.ingest([path]).ok == 30
        ids = engine.stores.meta.doc_ids_by_external(["e0", "e29"])
        assert set(ids) == {"e0", "e29"}
        # Edit one entry, drop another: one replaced, one removed, the rest unchanged.
        lines[3]["text"] = "A changed entry about quasars."
        del lines[10]
        path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        summary = engine.ingest([path])
        assert (summary.ok, summary.removed, summary.unchanged) == (1, 1, 28)
        assert_consistent(engine)


def test_source_of_jobs_is_pluggable(corpus: Path, settings) -> None:
    acked: list[str] = []

    class Recording(PathSource):
        def committed(self, source) -> None:
            acked.append(Path(source.path).name)

    with Engine.open(settings=settings) as engine:
        engine.ingest(Recording([corpus]))
    assert sorted(acked) == sorted(p.name for p in corpus.iterdir())


N_KILL = 400


@pytest.mark.timeout(900)
def test_sigkill_mid_run_then_resume_gives_every_document_once(tmp_path: Path, scifact: Path) -> None:
    """Kill -9 an ingest of 400 SciFact abstracts after its first commits, resume, and compare every
    document's chunk count with an uninterrupted run."""
    col = tmp_path / "part.jsonl"
    with open(scifact / "corpus.jsonl") as f:
        col.write_text("".join(next(f) for _ in range(N_KILL)))
    home = tmp_path / "killed"
    env = {**os.environ, "FANRAG_PIPELINE__JSONL_DOCS_PER_JOB": "25", "FANRAG_PIPELINE__WRITE_BATCH": "32",
           "FANRAG_EMBED__GATHER": "64"}
    cmd = [sys.executable, "-m", "fanrag.cli", "ingest", str(col), "--home", str(home), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = home / "meta.sqlite"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db.exists() and _committed(db) >= 50:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read()!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _committed(db) < N_KILL
    resumed = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=600,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["ok"] + summary["unchanged"] == N_KILL and summary["failed"] == []
    assert summary["unchanged"] >= 50  # it resumed: committed documents were not redone

    reference = tmp_path / "clean"
    clean = subprocess.run([*cmd[:5], "--home", str(reference), "--quiet"], env=env, capture_output=True, timeout=600,
                           check=False)
    assert clean.returncode == 0, clean.stderr
    with Engine.open(home, mode="read") as a, Engine.open(reference, mode="read") as b:
        counts_a = {d.doc_id: d.n_chunks for d in a.stores.meta.documents(status="committed")}
        counts_b = {d.doc_id: d.n_chunks for d in b.stores.meta.documents(status="committed")}
        assert counts_a == counts_b and len(counts_a) == N_KILL
        assert assert_consistent(a) == assert_consistent(b)


def _committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM documents WHERE status = 'committed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_file_that_turns_bad_keeps_its_last_good_version(corpus: Path, settings) -> None:
    with Engine.open(settings=settings) as engine:
        engine.ingest([corpus])
        before = assert_consistent(engine)
        (corpus / "alpha.txt").write_bytes(b"\x00\xff\x10" * 100)
        summary = engine.ingest([corpus])
        assert [Path(p).name for p, _ in summary.failed] == ["alpha.txt"]
        assert assert_consistent(engine) == before
        assert engine.stores.keywords.search("helium nuclei", 5)
