"""How hard a built set is for BM25 alone: recall of ALL gold passages at k, per question type.

Uses fanrag's own BM25 store (tantivy, English analyser, title + text in one field). Rows:
- ``bm25``: one chunk per document, the question as asked;
- ``bm25+bridge`` (bridge questions only): the question with the second-hop entity's name appended,
  the ceiling of a perfect second hop; the gap between the rows is what query decomposition can win;
- with ``--chunk-chars N``, ``chunks`` and ``chunks+title``: documents cut at paragraph breaks into
  chunks of about N characters, indexed without and with the document title in each chunk (documents
  ranked by their best chunk). The gap is what a chunk header carrying the title is worth.

A good multi-hop set is clearly below 1 on the first row (one query rarely finds both passages) and
well above 0 (it is not hopeless). Writes ``bm25_check.json`` beside the set.
Usage: ``python bench/datasets/check_bm25.py /work/data/multihop [--k 10] [--chunk-chars 1000]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # a checkout without installing

from fanrag.stores.keywords_tantivy import TantivyKeywordStore
from fanrag.types import Chunk

Search = Callable[[str, int], list[str]]  # question, k -> document ids, best first


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split(text: str, size: int) -> list[str]:
    """Paragraphs packed into chunks of about ``size`` characters (0: the whole text)."""
    if size <= 0:
        return [text]
    chunks: list[str] = []
    for para in text.split("\n\n"):
        if chunks and len(chunks[-1]) + len(para) + 2 <= size:
            chunks[-1] += "\n\n" + para
        else:
            chunks.append(para)
    return chunks


@contextmanager
def bm25(corpus: Sequence[Mapping[str, str]], size: int = 0, titles: bool = True,
         batch: int = 2000) -> Iterator[Search]:
    """A document search over a temporary fanrag BM25 index of ``corpus`` cut into chunks."""
    with tempfile.TemporaryDirectory() as tmp:
        store = TantivyKeywordStore(Path(tmp) / "bm25")
        try:
            for start in range(0, len(corpus), batch):
                part = corpus[start:start + batch]
                chunks = [Chunk(chunk_id=f"{r['_id']}#{n}", doc_id=r["_id"], position=n, text=piece,
                                char_start=0, char_end=len(piece))
                          for r in part for n, piece in enumerate(split(r["text"], size))]
                store.add(chunks, titles={r["_id"]: r.get("title", "") for r in part} if titles else None)
            yield lambda text, k: _documents(store, text, k)
        finally:
            store.close()


def _documents(store: TantivyKeywordStore, text: str, k: int) -> list[str]:
    ranked = dict.fromkeys(hit.chunk_id.rsplit("#", 1)[0] for hit in store.search(text, k * 20))
    return list(ranked)[:k]


def all_found(ranked: Sequence[str], gold: Sequence[str]) -> float:
    return float(set(gold) <= set(ranked))


def share_found(ranked: Sequence[str], gold: Sequence[str]) -> float:
    return len(set(gold) & set(ranked)) / len(gold)


def evaluate(search: Search, name: str, questions: Sequence[Mapping], answers: Mapping[str, Mapping],
             k: int, sums: dict[str, dict[str, float]]) -> None:
    """Add one searcher's scores to ``sums``, per row and group ("all", each type, each type by its
    number of gold passages, each kind); first and second hop hit rates for the bridge group."""
    for q in questions:
        info = answers[q["_id"]]
        gold = info["gold_docs"]
        for suffix, text in queries_for(q["text"], info).items():
            ranked = search(text, k)
            groups = (("all", info["type"], f"{info['type']}/{len(gold)}_gold", f"kind/{info['kind']}")
                      if not suffix else (info["type"],))
            for group in groups:
                cell = sums[f"{name}{suffix}/{group}"]
                cell["questions"] += 1
                cell[f"recall_all@{k}"] += all_found(ranked, gold)
                cell[f"recall@{k}"] += share_found(ranked, gold)
                if group == "bridge":
                    cell[f"first_hop@{k}"] += float(gold[0] in ranked)
                    cell[f"second_hop@{k}"] += float(gold[1] in ranked)


def queries_for(question: str, info: Mapping) -> dict[str, str]:
    """The question; for bridge questions also the question plus the bridge entity (a perfect hop)."""
    rows = {"": question}
    if info.get("bridge_entity"):
        bridge = re.sub(r"\s*\([^()]*\)$", "", info["bridge_entity"])  # "Georgia (country)" -> "Georgia"
        rows["+bridge"] = f"{question} {bridge}"
    return rows


def means(sums: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {name: {m: (v if m == "questions" else round(v / cell["questions"], 3)) for m, v in cell.items()}
            for name, cell in sorted(sums.items())}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-chars", type=int, default=0, help="also rank by chunks of this size")
    args = parser.parse_args(argv)
    corpus = read_jsonl(args.dataset / "corpus.jsonl")
    questions = read_jsonl(args.dataset / "queries.jsonl")
    answers = {a["_id"]: a for a in read_jsonl(args.dataset / "answers.jsonl")}
    runs = {"bm25": (0, True)}
    if args.chunk_chars:
        runs |= {"chunks": (args.chunk_chars, False), "chunks+title": (args.chunk_chars, True)}
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, (size, titles) in runs.items():
        with bm25(corpus, size, titles) as search:
            evaluate(search, name, questions, answers, args.k, sums)
    out = {"dataset": str(args.dataset), "k": args.k, "chunk_chars": args.chunk_chars, "passages": len(corpus),
           "rows": means(sums)}
    (args.dataset / "bm25_check.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
