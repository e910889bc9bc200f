"""The hostile corpus (corpus.py) through ``fanrag ingest``, run as a user runs it, under generous bounds
on wall time and on the memory of the whole process tree: every bad file is named once, on one line,
with its reason; every good file is committed; every store holds exactly the committed chunks; a second
run changes nothing. Files that change or vanish while a run goes end the same way once a run settles.

A case that fails here because it commits, hangs or eats memory names the guard it needs (``Case.bound``);
``test_each_bounded_case_alone`` runs each such case by itself, so the missing guards are listed one by one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fanrag.ids import source_uri
from fanrag.names import shown

from .corpus import Case, Corpus, Mutator, write_corpus, write_mutable
from .harness import GIB, Index, Outcome, ingest, read_index

WALL_S = 600.0  # the whole corpus, 2 workers: ~60 s with every guard on a 2-core machine other work shares
RSS = 2 * GIB  # the whole process tree (CLI, forkserver, workers): ~0.4 GiB on good files
CASE_WALL_S = 90.0
CASE_RSS = int(1.5 * GIB)
BOUNDED = ["bomb.docx", "stream-bomb.pdf", "deep.html", "deep.jsonl", "long-line.jsonl", "blank-lines.jsonl"]
_UNSHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("hostile") / "corpus")


@pytest.fixture(scope="module")
def first(corpus: Corpus) -> tuple[Path, Outcome]:
    home = corpus.root.parent / "home"
    return home, ingest(_paths(corpus), home, wall_s=WALL_S, rss=RSS)


def _paths(corpus: Corpus) -> list[str]:
    return [str(corpus.root), *(c.path for c in corpus.direct)]


def _finished(home: Path, outcome: Outcome, corpus: Corpus) -> dict[str, object]:
    """The run's summary; a run killed at a bound fails here, naming the cases it had not finished."""
    if outcome.returncode is None:
        recorded = set(read_index(home).sources) if (home / "meta.sqlite").exists() else set()
        open_cases = [f"{shown(os.path.basename(c.path))} ({c.bound or c.what})" for c in corpus.cases
                      if source_uri(c.path) not in recorded and c.expect != "entry" or c.bound]
        pytest.fail(f"ingest killed at a bound ({outcome.exceeded}); not recorded, or needing a guard: "
                    f"{', '.join(open_cases)}")
    assert outcome.returncode in (0, 1), outcome.stderr[-3000:]
    return outcome.summary()


def _failures(summary: dict[str, object]) -> list[tuple[str, str]]:
    return [(f["source"], f["reason"]) for f in summary["failed"]]  # type: ignore[index, union-attr]


def _failure_of(case: Case, failures: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if case.expect == "entry":  # a bad line of a collection is named by its entry: file#line1
        return [(s, r) for s, r in failures if s.startswith(source_uri(case.path) + "#")]
    return [(s, r) for s, r in failures if s == shown(case.path)]


# ------------------------------------------------------------------------------------------ the first run

def test_the_run_stays_within_its_bounds(first: tuple[Path, Outcome], corpus: Corpus) -> None:
    home, outcome = first
    _finished(home, outcome, corpus)
    assert outcome.wall_s < WALL_S and outcome.peak_rss < RSS


def test_every_bad_file_is_named_once_on_one_line_with_its_reason(first: tuple[Path, Outcome],
                                                                  corpus: Corpus) -> None:
    failures = _failures(_finished(*first, corpus))
    for source, reason in failures:
        assert reason and not _UNSHOWN.search(source + reason), (source, reason)
    problems = []
    for case in corpus.expecting("fail") + corpus.expecting("entry"):
        named = _failure_of(case, failures)
        if len(named) != 1 or not re.search(case.reason, named[0][1], re.IGNORECASE):
            whole = [r for s, r in failures if s == shown(case.path)]
            problems.append(f"{shown(case.path)} ({case.what}): expected one failure matching /{case.reason}/"
                            f"{' from ' + case.bound if case.bound else ''}; got {named or whole or 'none'}")
    assert not problems, "\n".join(problems)
    expected = {f for case in corpus.cases + corpus.direct for f in _failure_of(case, failures)}
    assert [f for f in failures if f not in expected] == [], "failures of files that are not bad"


def test_every_good_file_is_committed(first: tuple[Path, Outcome], corpus: Corpus) -> None:
    home, outcome = first
    summary = _finished(home, outcome, corpus)
    index = read_index(home)
    missing = [f"{shown(c.path)} ({c.what}): {index.sources.get(source_uri(c.path))}"
               for c in corpus.expecting("ok") if index.sources.get(source_uri(c.path), ("", 0))[0] != "committed"]
    assert not missing, "\n".join(missing)
    for case in corpus.expecting("entry"):  # the good line of a collection with a bad one
        assert source_uri(case.path) + "#fine" in index.committed_docs.values(), (case.what, summary)


def test_every_store_holds_exactly_the_committed_chunks(first: tuple[Path, Outcome], corpus: Corpus) -> None:
    home, outcome = first
    _finished(home, outcome, corpus)
    index = read_index(home)
    assert index.consistent and index.meta_chunks > 0, index.counts()
    assert index.graph_chunks <= index.meta_chunks


def test_a_second_run_changes_nothing_and_names_each_failure_on_one_line(first: tuple[Path, Outcome],
                                                                        corpus: Corpus) -> None:
    home, outcome = first
    failures = _failures(_finished(home, outcome, corpus))
    before = read_index(home)
    again = ingest(_paths(corpus), home, wall_s=WALL_S, rss=RSS, json_out=False)
    assert again.returncode == 1, again.exceeded or again.stderr[-3000:]
    head = again.stdout.splitlines()[0]
    assert head.startswith("0 ingested,") and " 0 removed " in head, head
    lines = again.stderr.splitlines()  # one line per failure, in whatever order the sources finished
    assert sorted(lines) == sorted(f"FAILED {shown(s)}: {shown(r)}" for s, r in failures), "\n".join(lines[:40])
    after = read_index(home)
    assert after.counts() == before.counts() and after.committed_docs == before.committed_docs


# ------------------------------------------------------------------------------------------ one at a time

@pytest.mark.parametrize("name", BOUNDED)
def test_each_bounded_case_alone(name: str, corpus: Corpus, tmp_path: Path) -> None:
    case = next(c for c in corpus.cases if os.path.basename(c.path) == name)
    outcome = ingest([case.path], tmp_path / "home", wall_s=CASE_WALL_S, rss=CASE_RSS)
    assert outcome.returncode is not None, f"{name} ({case.what}) needs {case.bound}: {outcome.exceeded}"
    failures = _failures(outcome.summary())
    named = _failure_of(case, failures)
    assert len(named) == 1 and re.search(case.reason, named[0][1], re.IGNORECASE), \
        f"{name} ({case.what}) needs {case.bound}: failures {failures}"


def test_a_page_limit_set_for_the_run_reaches_its_workers(corpus: Corpus, tmp_path: Path) -> None:
    """``ingest.max_pages`` from the environment: the 3,000-page PDF fails by that setting's name."""
    path = str(corpus.root / "pages-3000.pdf")
    outcome = ingest([path], tmp_path / "home", wall_s=CASE_WALL_S, rss=CASE_RSS,
                     env={"FANRAG_INGEST__MAX_PAGES": "1000"})
    assert outcome.returncode == 1, outcome.exceeded or outcome.stderr[-2000:]
    [(source, reason)] = _failures(outcome.summary())
    assert source == path and "max_pages" in reason, reason


# ------------------------------------------------------------------------------------------ files that move

def test_files_that_change_or_vanish_during_a_run(tmp_path: Path) -> None:
    """A thread edits, truncates, deletes and replaces files while the run goes: the run ends within its
    bounds, each casualty fails alone on one line, every store agrees; once the files stop moving, a run
    (with --prune) commits exactly the files that exist, and the next one changes nothing."""
    root = tmp_path / "moving"
    write_mutable(root)
    home = tmp_path / "home"
    mutator = Mutator(root)
    mutator.start()
    try:
        outcome = ingest([str(root)], home, wall_s=WALL_S, rss=RSS)
    finally:
        mutator.stop()
    assert mutator.actions > 20, "the files did not move during the run"
    assert outcome.returncode in (0, 1), outcome.exceeded or outcome.stderr[-3000:]
    for source, reason in _failures(outcome.summary()):
        assert Path(source).parent == root and reason and not _UNSHOWN.search(source + reason), (source, reason)
    assert _consistent(read_index(home))

    settled = ingest([str(root)], home, wall_s=WALL_S, rss=RSS, extra=("--prune",))
    assert settled.returncode == 0, settled.exceeded or settled.stdout
    index = read_index(home)
    assert _consistent(index)
    assert {u for u, (status, _) in index.sources.items() if status == "committed"} == \
        {source_uri(p) for p in root.glob("m*.txt")}
    last = ingest([str(root)], home, wall_s=WALL_S, rss=RSS).summary()
    assert (last["ok"], last["removed"], last["failed"]) == (0, 0, [])
    assert read_index(home).counts() == index.counts()


def _consistent(index: Index) -> bool:
    assert index.consistent, index.counts()
    return True
