"""Answer scores, for dev sets that ship gold answers (``answers.jsonl`` beside the BEIR files).

Each line: ``{"_id": qid, "answer": [spans...], "answer_type": "span|multi-span|arithmetic|count|...",
"gold_docs": [corpus _ids of the evidence]}`` (TAT-QA's layout; other fields are ignored; a file corpus
gives ``gold_pages``, which then take the place of ``gold_docs``).

Per question, against the answer the engine gives a user (its default configuration):

- ``em``            1 if the normalised answer equals the normalised gold (the spans joined by a space)
- ``f1``            token F1 between them (SQuAD's bag-of-tokens F1)
- ``found``         1 if every gold span occurs, normalised, in the text of the chunks the answer cites
                    (what a reader who follows the citations can verify)
- ``cite_precision``  cited documents that are gold evidence / cited documents (0 when nothing is cited)
- ``cite_recall``     gold evidence documents cited / gold evidence documents

Normalisation (SQuAD's, plus what financial answers need): lower case, no punctuation except inside
numbers, no articles, no currency signs or thousands separators, one space between tokens. An extractive
answer quotes whole sentences, so its exact match is near 0 by construction; ``found`` and the
citation scores are what it can be judged on.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .beir import DatasetError

ANSWER_FILE = "answers.jsonl"
ANSWER_METRICS = ("em", "f1", "found", "cite_precision", "cite_recall")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUM_SEP = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,568.6 -> 1568.6
_PUNCT = re.compile(r"[^\w\s.%-]|(?<!\d)[.%-]|[.%-](?!\d)")  # keep 12.5, -3 and 4% inside numbers


@dataclass(frozen=True, slots=True)
class GoldAnswer:
    spans: tuple[str, ...]
    kind: str
    evidence: tuple[str, ...]  # corpus _ids


@dataclass(frozen=True, slots=True)
class AnswerScore:
    em: float
    f1: float
    found: float
    cite_precision: float
    cite_recall: float

    def as_dict(self) -> dict[str, float]:
        return {m: getattr(self, m) for m in ANSWER_METRICS}


def load_answers(root: str | Path) -> dict[str, GoldAnswer]:
    """The gold answers of a dataset directory; empty when it has no ``answers.jsonl``."""
    path = Path(root) / ANSWER_FILE
    if not path.is_file():
        return {}
    out: dict[str, GoldAnswer] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                spans = obj["answer"] if isinstance(obj["answer"], list) else [obj["answer"]]
                # a file corpus judges pages: its evidence is gold_pages where the set gives them
                evidence = obj.get("gold_pages") or obj.get("gold_docs", ())
                out[str(obj["_id"])] = GoldAnswer(tuple(str(s) for s in spans), str(obj.get("answer_type", "")),
                                                  tuple(str(d) for d in evidence))
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}: line {n}: not an answer object ({exc})") from None
    return out


def normalize(text: str) -> str:
    text = _NUM_SEP.sub("", text.lower().replace("$", " ").replace("€", " ").replace("£", " "))
    text = _PUNCT.sub(" ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def score_answer(gold: GoldAnswer, answer: str, cited_texts: Sequence[str], cited_docs: Iterable[str]) -> AnswerScore:
    """Score one answer; ``cited_docs`` are the corpus _ids of the documents its citations point to."""
    want = " ".join(gold.spans)
    evidence = normalize(" ".join(cited_texts))
    found = all(normalize(s) and normalize(s) in evidence for s in gold.spans) if gold.spans else False
    cited = set(cited_docs)
    gold_docs = set(gold.evidence)
    hit = len(cited & gold_docs)
    return AnswerScore(
        em=float(normalize(answer) == normalize(want)),
        f1=token_f1(answer, want),
        found=float(found),
        cite_precision=hit / len(cited) if cited else 0.0,
        cite_recall=hit / len(gold_docs) if gold_docs else 0.0,
    )


def mean_scores(scores: Mapping[str, AnswerScore]) -> dict[str, float]:
    if not scores:
        return {}
    return {m: sum(getattr(s, m) for s in scores.values()) / len(scores) for m in ANSWER_METRICS}
