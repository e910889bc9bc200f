"""BEIR datasets on disk, and TREC run/qrels files.

A BEIR directory holds ``corpus.jsonl`` ({"_id", "title", "text"} per line), ``queries.jsonl``
({"_id", "text"}) and ``qrels/<split>.tsv`` (a ``query-id corpus-id score`` header, then one judgement
per line). Only the queries that the split judges are kept: queries.jsonl usually holds every split.

A *file corpus* replaces ``corpus.jsonl`` with a directory of documents (``corpus/``, ``pdfs/`` or
``documents/``), ingested as a user would ingest them; its corpus ids are a file's path relative to that
directory, with ``#page=N`` for a page of a paged document (``10k.pdf#page=41``): the evidence page is
what such a set judges.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import FanragError


class DatasetError(FanragError):
    """A BEIR directory or TREC file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class BeirDataset:
    root: Path
    split: str
    queries: dict[str, str]  # qid -> text, judged queries only, in queries.jsonl order
    qrels: dict[str, dict[str, int]]  # qid -> corpus _id -> relevance level
    corpus: Path = Path()  # corpus.jsonl, or a directory of documents (a file corpus)

    @property
    def files(self) -> bool:
        """A directory of documents, judged by file (and page), rather than a corpus.jsonl."""
        return self.corpus.is_dir()


FILE_CORPUS_DIRS = ("corpus", "pdfs", "documents")


def find_corpus(root: Path) -> Path:
    if (root / "corpus.jsonl").is_file():
        return root / "corpus.jsonl"
    for name in FILE_CORPUS_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: no corpus.jsonl and no directory of documents ({', '.join(FILE_CORPUS_DIRS)})")


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    root = Path(root)
    corpus = find_corpus(root)
    for need in (root / "queries.jsonl", root / "qrels" / f"{split}.tsv"):
        if not need.is_file():
            raise DatasetError(f"{need}: missing (a BEIR directory needs corpus.jsonl, queries.jsonl, "
                               f"qrels/{split}.tsv)")
    qrels = read_qrels_tsv(root / "qrels" / f"{split}.tsv")
    queries = {qid: text for qid, text in _read_queries(root / "queries.jsonl") if qid in qrels}
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise DatasetError(f"{root / 'queries.jsonl'}: {len(missing)} judged queries have no text, e.g. {missing[0]!r}")
    return BeirDataset(root=root, split=split, queries=queries, qrels=qrels, corpus=corpus)


def _read_queries(path: Path) -> Iterable[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield str(obj["_id"]), str(obj["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}: line {n}: not a query object ({exc})") from None


def read_qrels_tsv(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels: tab-separated ``query-id corpus-id score``, with a header line."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and not parts[-1].lstrip("-").isdigit():
                continue  # the header
            if not line.strip():
                continue
            if len(parts) != 3:
                raise DatasetError(f"{path}: line {n}: expected 3 tab-separated fields, got {len(parts)}")
            try:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
            except ValueError:
                raise DatasetError(f"{path}: line {n}: relevance {parts[2]!r} is not an integer") from None
    return qrels


def corpus_ids(path: str | Path) -> list[str]:
    """Every ``_id`` of a corpus.jsonl, in file order (cheap: one json parse per line)."""
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(str(json.loads(line)["_id"]))
    return out


def write_trec_run(path: str | Path, rankings: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> None:
    """``qid Q0 docid rank score tag``, one line per ranked document, ranks from 1. Rankings are
    written in the given order; trec_eval re-sorts by score, so exact score ties may be reordered."""
    with open(path, "w", encoding="utf-8") as out:
        for qid, ranked in rankings.items():
            # full-precision scores: rounding would add ties that trec_eval then reorders by docid
            out.writelines(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n"
                           for rank, (docid, score) in enumerate(ranked, start=1))


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DatasetError(f"{path}: line {n}: expected 'qid Q0 docid rank score tag'")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run
