"""How hard a built set is for BM25 alone: recall of ALL gold passages at k, per question type.

Uses fanrag's own BM25 store (tantivy, English analyser, title + text in one field), one passage per
document, so the figures are what fanrag's BM25 branch gets on unchunked passages. Two rows:
- ``bm25``: the question as asked;
- ``bm25+bridge`` (bridge questions only): the question with the second-hop entity's name appended,
  the ceiling of a perfect second hop; the gap between the rows is what query decomposition can win.

A good multi-hop set is clearly below 1 on the first row (one query rarely finds both passages) and
well above 0 (it is not hopeless). Writes ``bm25_check.json`` beside the set.
Usage: ``python bench/datasets/check_bm25.py /work/data/multihop [--k 10]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # a checkout without installing

from fanrag.stores.keywords_tantivy import TantivyKeywordStore
from fanrag.types import Chunk


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def index_corpus(store: TantivyKeywordStore, corpus: Iterable[Mapping[str, str]], batch: int = 2000) -> None:
    rows = list(corpus)
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        chunks = [Chunk(chunk_id=r["_id"], doc_id=r["_id"], position=0, text=r["text"], char_start=0,
                        char_end=len(r["text"])) for r in part]
        store.add(chunks, titles={r["_id"]: r.get("title", "") for r in part})


def all_found(ranked: Sequence[str], gold: Sequence[str]) -> float:
    return float(set(gold) <= set(ranked))


def share_found(ranked: Sequence[str], gold: Sequence[str]) -> float:
    return len(set(gold) & set(ranked)) / len(gold)


def evaluate(store: TantivyKeywordStore, questions: Sequence[Mapping], answers: Mapping[str, Mapping],
             k: int) -> dict[str, dict[str, float]]:
    """Mean scores per row and group ("all", each type, each type by its number of gold passages, each
    kind); first and second hop hit rates for the bridge group."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for q in questions:
        info = answers[q["_id"]]
        gold = info["gold_docs"]
        for row, text in queries_for(q["text"], info).items():
            ranked = [hit.chunk_id for hit in store.search(text, k)]
            groups = (("all", info["type"], f"{info['type']}/{len(gold)}_gold", f"kind/{info['kind']}")
                      if row == "bm25" else (info["type"],))
            for group in groups:
                cell = sums[f"{row}/{group}"]
                cell["questions"] += 1
                cell[f"recall_all@{k}"] += all_found(ranked, gold)
                cell[f"recall@{k}"] += share_found(ranked, gold)
                if group == "bridge":
                    cell[f"first_hop@{k}"] += float(gold[0] in ranked)
                    cell[f"second_hop@{k}"] += float(gold[1] in ranked)
    return {name: {m: (v if m == "questions" else round(v / cell["questions"], 3)) for m, v in cell.items()}
            for name, cell in sorted(sums.items())}


def queries_for(question: str, info: Mapping) -> dict[str, str]:
    """The question; for bridge questions also the question plus the bridge entity (a perfect hop)."""
    rows = {"bm25": question}
    if info.get("bridge_entity"):
        bridge = re.sub(r"\s*\([^()]*\)$", "", info["bridge_entity"])  # "Georgia (country)" -> "Georgia"
        rows["bm25+bridge"] = f"{question} {bridge}"
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    corpus = read_jsonl(args.dataset / "corpus.jsonl")
    questions = read_jsonl(args.dataset / "queries.jsonl")
    answers = {a["_id"]: a for a in read_jsonl(args.dataset / "answers.jsonl")}
    with tempfile.TemporaryDirectory() as tmp:
        store = TantivyKeywordStore(Path(tmp) / "bm25")
        try:
            index_corpus(store, corpus)
            result = evaluate(store, questions, answers, args.k)
        finally:
            store.close()
    out = {"dataset": str(args.dataset), "k": args.k, "passages": len(corpus), "rows": result}
    (args.dataset / "bm25_check.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
