"""The extractive answer, without a language model: the sources' passages that best answer the question,
quoted, merged where they follow each other, and cited.

1. Cut each source into passages (``text.passages``: sentences, record lines, table rows, each with the
   headings it sits under) and keep the quotable ones (prose of sensible length, no code).
2. Score each passage against the question twice: BM25 over the passages (term overlap, with document
   frequencies taken over these passages) and, when an embedder is given, the cosine between the
   question's vector and the passage's (heading + text). The two are mixed linearly, BM25 scaled by its
   best value: ``semantic * cos + (1 - semantic) * bm25 / max(bm25)``; a matching passage of source [n]
   gets ``source_prior / n`` more (see ``Scoring`` for the measured defaults).
3. Pick the best passages (at most ``per_source`` from one source), then merge picked passages that are
   neighbours in the same block of the same source into one quote, which carries that source's [n].

Embedding passages is the expensive step (one forward pass each): at most ``max_embed`` passages are
embedded per question, those with the best term scores first, then by source rank, and their vectors are
kept in an LRU keyed by text, so a chunk that comes back costs nothing the second time.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .text import Passage, looks_like_code, passages, stems, symbol_share, words

if TYPE_CHECKING:
    from ..embed.base import Embedder


@dataclass(frozen=True, slots=True)
class Candidate:
    """A quotable passage of source ``n`` (1-based, the [n] of the answer); ``index`` is its place among
    that source's passages, so neighbours are ``index`` and ``index + 1`` of the same ``block``."""

    n: int
    index: int
    passage: Passage

    @property
    def match_text(self) -> str:
        """What is scored: the passage under its headings (and column header)."""
        return f"{self.passage.context} {self.passage.text}".strip()


@dataclass(frozen=True, slots=True)
class Quote:
    """One or more neighbouring passages of source ``n``, quoted together."""

    n: int
    passages: tuple[Passage, ...]

    def render(self) -> str:
        first = self.passages[0]
        if first.kind == "sentence":
            return " ".join(p.text for p in self.passages)
        if first.kind == "row":
            return "; ".join(render_row(p) for p in self.passages)
        body = "; ".join(p.text for p in self.passages)
        return f"{first.headings[-1]} \u2014 {body}" if first.headings else body


def render_row(p: Passage) -> str:
    """A table row with its column names: ``Inventories: As Reported 1,571.7, Adjustments (3.1)``."""
    cells = [c.strip() for c in p.text.split("|")]
    names = [c.strip() for c in p.header.split("|")]
    label = cells[0].rstrip(" .")
    if len(names) != len(cells) or not any(names[1:]):  # no column names to show: the row as it is
        return p.text
    pairs = [f"{name} {cell}".strip() for name, cell in zip(names[1:], cells[1:], strict=True) if cell]
    return f"{label}: {', '.join(pairs)}" if label else ", ".join(pairs)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a passage must look like to be quoted."""

    min_words: int = 4
    max_words: int = 60
    max_symbols: float = 0.06

    def quotable(self, p: Passage) -> bool:
        n = len(words(p.text))
        if p.kind == "row":  # a row needs a label and at least one value
            return sum(bool(c.strip()) for c in p.text.split("|")) >= 2
        if p.kind == "line":  # a record's meaning is in its heading; its symbols (: % $) are content
            return 1 <= n <= self.max_words and not looks_like_code(p.text)
        # prose: code and tables split into "sentences" badly and read worse than the chunk itself
        return self.min_words <= n <= self.max_words and symbol_share(p.text) <= self.max_symbols and \
            not looks_like_code(p.text)


def candidates(texts: Sequence[str], limits: Limits) -> list[Candidate]:
    """The quotable passages of the sources, numbered [1]..[n] in the given order."""
    out: list[Candidate] = []
    for n, text in enumerate(texts, start=1):
        out.extend(Candidate(n, i, p) for i, p in enumerate(passages(text)) if limits.quotable(p))
    return out


def bm25_scores(query: str, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """BM25 of each text against the query, with document frequencies taken over these texts."""
    q = set(stems(query))
    bags = [Counter(stems(s)) for s in texts]
    n = len(bags)
    avg = (sum(sum(bag.values()) for bag in bags) / n) if n else 1.0
    df = Counter(t for bag in bags for t in bag if t in q)
    out = []
    for bag in bags:
        length = sum(bag.values()) or 1
        s = 0.0
        for t in q & bag.keys():
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            tf = bag[t]
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / (avg or 1.0)))
        out.append(s)
    return out


class VectorCache:
    """Passage vectors of one embedder, by text, least recently used out first. Thread-safe: the retriever
    answers several queries at once from its pool."""

    def __init__(self, embedder: Embedder, size: int = 8192) -> None:
        self.embedder = embedder
        self.size = size
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) vectors; the texts not cached are embedded in one ``embed`` call (outside the
        lock: another query may embed meanwhile, and one may evict what this one read: it kept its copy)."""
        with self._lock:
            found = {t: self._vecs[t] for t in texts if t in self._vecs}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(zip(missing, self.embedder.embed(missing), strict=True))
        with self._lock:
            for text, vec in found.items():
                self._vecs[text] = vec
                self._vecs.move_to_end(text)
            while len(self._vecs) > self.size:
                self._vecs.popitem(last=False)
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        return np.stack([found[t] for t in texts])


@dataclass(frozen=True, slots=True)
class Scoring:
    """How passages are scored: ``semantic`` is the cosine's share of the mix (0 = term overlap only);
    ``source_prior / n`` is added to a matching passage of source [n] (the retriever ranked the sources, and
    its order knows more than one passage does); ``max_embed`` caps the passages embedded per question; a
    passage scoring ``min_score`` or less is never quoted.

    Measured on three dev sets with gold answers (TAT-QA, multi-hop Wikipedia, Factbook): semantic 0.85
    and the prior 0.2 cite a source holding the gold answer most often (mean 0.469 at 12 passages embedded,
    0.466 at 6, 0.449 by term overlap alone); each embedded passage costs about a query embedding, so 6.
    """

    semantic: float = 0.85
    source_prior: float = 0.2
    max_embed: int = 6
    min_score: float = 0.0


def score(query: str, cands: Sequence[Candidate], scoring: Scoring, vectors: VectorCache | None) -> list[float]:
    """Each candidate's score (see the module docstring); term overlap alone without ``vectors``."""
    texts = [c.match_text for c in cands]
    terms = bm25_scores(query, texts)
    mixed = terms
    if vectors is not None and scoring.semantic > 0 and cands:
        top = max(terms)
        cos = [0.0] * len(cands)
        chosen = embed_first(terms, cands, scoring.max_embed)
        sims = vectors.vectors([texts[i] for i in chosen]) @ vectors.embedder.embed_query(query)
        for i, sim in zip(chosen, sims, strict=True):
            cos[i] = float(sim)
        w = scoring.semantic
        mixed = [w * c + (1 - w) * (t / top if top > 0 else 0.0) for c, t in zip(cos, terms, strict=True)]
    return [s + scoring.source_prior / c.n if s > 0 else s for s, c in zip(mixed, cands, strict=True)]


def embed_first(terms: Sequence[float], cands: Sequence[Candidate], cap: int) -> list[int]:
    """The candidates worth embedding, at most ``cap``: best term score first, then by source rank and
    position (the retriever ranked the sources; their first passages are the likeliest)."""
    order = sorted(range(len(cands)), key=lambda i: (-terms[i], cands[i].n, cands[i].index))
    return sorted(order[:cap])


def pick(cands: Sequence[Candidate], scores: Sequence[float], max_passages: int, per_source: int,
         min_score: float = 0.0) -> list[Candidate]:
    """The best passages, at most ``per_source`` of one source, no repeated text; in score order (a better
    source wins ties, then the earlier passage)."""
    ranked = sorted(zip(scores, cands, strict=True), key=lambda x: (-x[0], x[1].n, x[1].index))
    picked: list[Candidate] = []
    per: Counter[int] = Counter()
    seen: set[str] = set()
    for s, c in ranked:
        if s <= min_score or len(picked) >= max_passages:
            break
        key = " ".join(words(c.passage.text))
        if per[c.n] >= per_source or key in seen:
            continue
        picked.append(c)
        per[c.n] += 1
        seen.add(key)
    return picked


def merge(picked: Sequence[Candidate]) -> list[Quote]:
    """Picked passages as quotes: a run of neighbours (same source and block, consecutive, same kind)
    becomes one quote in reading order; quotes come in the order of their best passage."""
    rank = {(c.n, c.index): r for r, c in enumerate(picked)}
    runs: list[list[Candidate]] = []
    for c in sorted(picked, key=lambda c: (c.n, c.index)):
        last = runs[-1][-1] if runs else None
        if last is not None and (last.n, last.passage.block, last.passage.kind, last.index + 1) == \
                (c.n, c.passage.block, c.passage.kind, c.index):
            runs[-1].append(c)
        else:
            runs.append([c])
    runs.sort(key=lambda run: min(rank[(c.n, c.index)] for c in run))
    return [Quote(run[0].n, tuple(c.passage for c in run)) for run in runs]
