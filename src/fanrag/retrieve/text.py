"""Small text helpers shared by query transformation, PRF and the extractive answer: word terms without
stopwords, and a sentence splitter. Pure Python and cheap: they run inside the latency budget."""

from __future__ import annotations

import re
from collections.abc import Iterable

# A compact English stopword list (the usual SMART/Lucene core). Kept here, not downloaded, so the
# default path is offline and deterministic.
STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "can't", "cannot", "could", "couldn't", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "down", "during", "each", "few", "for", "from", "further", "had", "hadn't", "has", "hasn't", "have", "haven't", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "just", "let's", "me", "more", "most", "mustn't", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shan't", "she", "should", "shouldn't", "so", "some", "such", "than", "that", "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "very", "via", "was", "wasn't", "we", "were", "weren't", "what", "what's", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "won't", "would", "wouldn't", "you", "your", "yours", "yourself", "yourselves", "vs", "versus", "compare", "compared", "comparison", "difference", "between", "does", "do", "did", "tell", "explain", "describe"]
)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-']*")
# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or quote; abbreviations like
# "e.g." or "Fig." rarely sit before a capital, so the rule is good enough for quoting, not for parsing.
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def words(text: str) -> list[str]:
    """Lower-cased word tokens, stopwords included."""
    return [w.lower().strip("-'") for w in _WORD.findall(text)]


def terms(text: str) -> list[str]:
    """Content terms: lower-cased words that are not stopwords and not one character long."""
    return [w for w in words(text) if len(w) > 1 and w not in STOPWORDS]


_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")
_SYMBOLS = frozenset("()[]{}=<>#;:_*/\\|`$@%^~+")


def stem(word: str) -> str:
    """A light suffix stripper (tasks -> task, cancelled/cancelling -> cancel): enough to match a query's
    words with a sentence's, nothing like a real stemmer."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 4:
            word = word[: -len(suf)] + ("y" if suf == "ies" else "")
            if suf in ("ed", "ing", "ings") and len(word) > 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
                word = word[:-1]  # cancell -> cancel, stopp -> stop
            break
    return word


def stems(text: str) -> list[str]:
    """Stemmed content terms."""
    return [stem(t) for t in terms(text)]


# Lines of code that survive sentence splitting: comments/prompts, assignments, braces, definitions.
_CODE = re.compile(r"^\s*[#>$]|\w\s*==?\s*[\w\"'(\[]|[{};]|\bdef \w+\(")


def looks_like_code(text: str) -> bool:
    return bool(_CODE.search(text))


def symbol_share(text: str) -> float:
    """Share of code-like symbols among the non-space characters: high for code, near 0 for prose."""
    chars = [c for c in text if not c.isspace()]
    return sum(c in _SYMBOLS for c in chars) / len(chars) if chars else 0.0


def sentences(text: str) -> list[str]:
    """Split text into sentences (see ``_SENT_END``); blank pieces dropped."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        out.extend(s.strip() for s in _SENT_END.split(" ".join(block.split())) if s.strip())
    return out


def dedupe(items: Iterable[str]) -> list[str]:
    """Keep the first of case/space-insensitive duplicates, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for it in items:
        key = " ".join(it.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(it)
    return out
