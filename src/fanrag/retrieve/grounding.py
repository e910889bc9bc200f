"""Does each sentence of a generated answer stand on the sources it cites?

A language model told to cite still writes sentences that cite nothing, cite the wrong source, or change
a figure. After generation (streamed or not) the answer is split into sentences, each with the [n]
markers inside it or right after it, and each sentence is checked against its cited sources only:

- ``support``: the share of the sentence's content terms (stemmed; not its numbers, not words about the
  sources) that its cited sources contain together (a sentence citing [1][3] may take half from each).
  When that share falls short and an embedder is given, the cosine between the sentence and the closest
  passage (``text.passages``) of its cited sources: a paraphrase shares fewer words.
- every number in the sentence (a figure, a year) must occur in one of its cited sources: a changed
  figure is the commonest unsupported claim, and neither measure above sees it.

A sentence is flagged (``supported`` false, with the reason) when it cites nothing, cites no source that
supports it, or states a number none of its sources contains. A sentence with fewer than two content
terms and no number ("In short:"), and the explicit decline ("The sources do not contain the answer."),
are not judged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Hit
from .extractive import VectorCache
from .text import passages, split_sentences, stems

NOT_IN_SOURCES = "The sources do not contain the answer."
_MARKERS = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_LEADING_MARKERS = re.compile(r"^((?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])+)\s*")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
_DECLINE = re.compile(r"^\W*the sources do not contain the answer\b", re.IGNORECASE)

# A sentence is supported when its cited sources hold >= MIN_COVERAGE of its content terms, or one of their
# passages has cosine >= MIN_COSINE to it. Calibrated on 550 sentences drawn from the dev sets' retrieved
# chunks (TAT-QA, multi-hop Wikipedia, Factbook): every sentence cited to its own source, verbatim or with
# 30 % of its words dropped, passes; cited to another source retrieved for the same question, 3.9 % pass
# (0.6 % on coverage alone, 3.2 % on cosine alone); with one digit changed, 5.9 % pass (the changed number
# occurs elsewhere in the source). The cosine is there for paraphrases, which share fewer terms.
MIN_COSINE = 0.7
MIN_COVERAGE = 0.7
# Words an answer uses about its sources, not about the subject: never looked for in the sources.
_ANSWER_WORDS = frozenset(stems("source sources according mention mentions mentioned state states stated "
                                "document documents passage passages context provided"))


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    """One sentence of an answer and how its cited sources back it; ``index`` counts from 0 in the order
    the sentences appear, ``cites`` are its [n], ``support`` is in 0..1 (see the module docstring)."""

    index: int
    text: str
    cites: tuple[int, ...]
    support: float
    supported: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "text": self.text, "cites": list(self.cites),
                               "support": round(self.support, 4), "supported": self.supported}
        if self.reason:
            out["reason"] = self.reason
        return out


def unsupported(support: Sequence[SentenceSupport]) -> list[int]:
    """Indices of the sentences flagged as unsupported."""
    return [s.index for s in support if not s.supported]


def declines(answer: str) -> bool:
    """Whether the answer is the explicit "not in the sources" reply the prompt asks for."""
    return bool(_DECLINE.match(answer))


def cited_sentences(answer: str) -> list[tuple[str, tuple[int, ...]]]:
    """The answer's sentences, each with the [n] it carries. Markers that open a sentence ("... COX. [1]
    It ...") belong to the sentence before them."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for line in answer.splitlines():
        for sent in split_sentences(line):
            lead = _LEADING_MARKERS.match(sent)
            if lead and out:
                prev, cites = out[-1]
                out[-1] = (f"{prev} {lead.group(1).strip()}", cites + _numbers_in(lead.group(1)))
                sent = sent[lead.end():]
            if sent.strip():
                out.append((sent.strip(), _numbers_in(sent)))
    return out


def _numbers_in(markers: str) -> tuple[int, ...]:
    found = [int(n) for m in _MARKERS.finditer(markers) for n in re.split(r"[,;]", m.group(1))]
    return tuple(dict.fromkeys(found))


def claim_of(sentence: str) -> str:
    """The sentence without its citation markers."""
    return " ".join(_MARKERS.sub(" ", sentence).split())


def content_terms(claim: str) -> set[str]:
    """The stemmed content terms a claim must share with its sources: not its numbers (checked exactly,
    by ``figures``) and not the words an answer uses about its sources."""
    return {t for t in stems(claim) if not t[0].isdigit()} - _ANSWER_WORDS


def figures(text: str) -> set[str]:
    """The numbers a text states, normalised (``1,568.6`` -> ``1568.6``, ``12.0`` stays)."""
    return {m.group().replace(",", "").lstrip("+") for m in _NUMBER.finditer(text)}


class SupportChecker:
    """Checks an answer's sentences against the numbered sources (see the module docstring). The cosine
    is computed only for a sentence whose terms fall short, so a faithful answer costs no embedding."""

    def __init__(self, vectors: VectorCache | None = None, min_cosine: float = MIN_COSINE,
                 min_coverage: float = MIN_COVERAGE) -> None:
        self.vectors = vectors
        self.min_cosine = min_cosine
        self.min_coverage = min_coverage

    def check(self, answer: str, sources: Sequence[Hit]) -> list[SentenceSupport]:
        return [self._judge(i, sent, cites, sources) for i, (sent, cites) in enumerate(cited_sentences(answer))]

    def _judge(self, i: int, sent: str, cites: tuple[int, ...], sources: Sequence[Hit]) -> SentenceSupport:
        claim = claim_of(sent)
        terms, numbers = content_terms(claim), figures(claim)
        valid = tuple(n for n in cites if 1 <= n <= len(sources))
        if (len(terms) < 2 and not numbers) or declines(claim):  # "In short:", "Yes." say nothing to check
            return SentenceSupport(i, sent, valid, 1.0, True)
        if not valid:
            reason = "cites no source" if not cites else f"cites no given source: {list(cites)}"
            return SentenceSupport(i, sent, valid, 0.0, False, reason)
        # a sentence citing [1][3] may take one half from each: its terms are looked for in all of them
        cited_text = "\n".join(sources[n - 1].text for n in valid)
        support = len(terms & set(stems(cited_text))) / len(terms) if terms else 1.0
        if support < self.min_coverage:
            cos = self._best_cosine(claim, [sources[n - 1] for n in valid])
            if cos < self.min_cosine:
                return SentenceSupport(i, sent, valid, max(support, cos), False, "no cited source supports it")
            support = cos
        missing = numbers - figures(cited_text)
        if missing:
            return SentenceSupport(i, sent, valid, support, False,
                                   f"numbers not in the cited sources: {', '.join(sorted(missing))}")
        return SentenceSupport(i, sent, valid, support, True)

    def _best_cosine(self, claim: str, cited: Sequence[Hit]) -> float:
        """The cosine between the claim and the closest passage of its cited sources (0 without an
        embedder); passages come through the cache, so a source is embedded once."""
        texts = [f"{p.context} {p.text}".strip() for hit in cited for p in passages(hit.text)]
        if self.vectors is None or not texts:
            return 0.0
        return float((self.vectors.vectors(texts) @ self.vectors.embedder.embed_query(claim)).max())
