"""Query transformation: the sequential step before the fan-out.

``rules`` (the offline default) normalises the text and splits compound and comparison questions into
sub-questions. Its pseudo-relevance-feedback expansion (RM3-style) depends on a first BM25 search, so the
retriever calls ``prf_expand`` inside the BM25 branch rather than here: the other branches do not wait.

``llm`` asks an OpenAI-compatible chat endpoint for sub-questions and rewrites as JSON, under a strict
timeout; on timeout or bad JSON it falls back to ``rules`` and says so in the trace.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import ConfigError, QueryError
from ..settings import Settings
from .chat import ChatClient
from .text import dedupe, terms, words

MAX_SUBQUERIES = 5


@dataclass(frozen=True, slots=True)
class TransformResult:
    normalized: str
    subqueries: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    def extra_queries(self) -> list[str]:
        """Sub-questions and rewrites that differ from the query itself (each gets a dense search)."""
        skip = " ".join(self.normalized.lower().split())
        return [q for q in dedupe([*self.subqueries, *self.rewrites]) if " ".join(q.lower().split()) != skip]


@runtime_checkable
class QueryTransformer(Protocol):
    name: str
    blocking: bool  # does transform() wait on I/O (run it in a thread) or is it quick CPU work

    def transform(self, query: str) -> TransformResult: ...


def normalize(query: str) -> str:
    """NFKC, one space between words, no surrounding quotes or blanks."""
    text = " ".join(unicodedata.normalize("NFKC", query).split())
    return text.strip().strip("\"'“”‘’").strip()


# "what is the difference between A and B", "compare A with B", "A vs B"; and, in questions only,
# "A compared to B" / "how does A compare with B" (in statements, e.g. scientific claims, "higher titers compared to controls" is
# one assertion, not two topics).
_COMPARE = [
    re.compile(r"^(?:.*?\b)?(?:differences?|distinction)\s+between\s+(?P<a>.+?)\s+and\s+(?P<b>.+)$", re.IGNORECASE),
    re.compile(r"^(?:.*?\b)?compare\s+(?P<a>.+?)\s+(?:and|with|to|against)\s+(?P<b>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<a>.+?)\s+(?:versus|vs\.?)\s+(?P<b>.+)$", re.IGNORECASE),
]
_COMPARED_TO = re.compile(r"^(?P<a>.+?)\s+compare[sd]?\s+(?:to|with|against)\s+(?P<b>.+)$", re.IGNORECASE)
# Context after a comparison ("... on SciFact", "... for web servers") applies to both sides.
_TAIL = re.compile(r"\s+(?P<tail>(?:for|on|in|with|when|at|during|under|regarding)\s+.+)$", re.IGNORECASE)
# Question words before the first side: "what is the difference of ...", "how does ..."
_LEAD = re.compile(r"^(?:(?:what|which|how|why|is|are|does|do|should)\b.*?\b(?:is|are|of|between)\s+|"
                   r"(?:how|why|which|what|when|where)\s+(?:does|do|did|is|are|can|could|would|should|will)\s+|"
                   r"(?:is|are|does|do|did|can|could|should|will|would)\s+)",
                   re.IGNORECASE)
_QWORD = re.compile(r"^(?:what|which|who|whom|whose|when|where|why|how|is|are|does|do|did|can|could|should|"
                    r"will|would)\b", re.IGNORECASE)


def _is_question(q: str) -> bool:
    return q.rstrip().endswith("?") or bool(_QWORD.match(q))


def _substantial(text: str) -> bool:
    return len(terms(text)) >= 3 and len(words(text)) >= 4


def _comparison(q: str) -> list[str]:
    body = q.rstrip("?. ")
    patterns = [*_COMPARE, _COMPARED_TO] if _is_question(q) else _COMPARE
    for pattern in patterns:
        m = pattern.match(body)
        if not m:
            continue
        a, b = _LEAD.sub("", m["a"]).strip(" ,"), m["b"].strip(" ,")
        tail = _TAIL.search(b)
        if tail and tail.start() > 0:  # the shared context follows the second side
            b, ctx = b[: tail.start()], " " + tail["tail"]
        else:
            ctx = ""
        if terms(a) and terms(b):
            return [f"{a}{ctx}", f"{b}{ctx}"]
    return []


def _multi_question(q: str) -> list[str]:
    parts = [p.strip() + "?" for p in q.split("?") if p.strip()]
    return parts if len(parts) >= 2 and all(terms(p) for p in parts) else []


def _conjunction(q: str) -> list[str]:
    # Only questions are split: in a statement "and" nearly always joins parts of one assertion
    # ("crosstalk between DCs and ILCs"). In a question, split where both sides carry a question of their
    # own: a question word starts the right side, or both sides are substantial ("salt and pepper" is not),
    # and never inside "between A and B".
    if not _is_question(q):
        return []
    for m in re.finditer(r",?\s+and\s+", q):
        a, b = q[: m.start()].strip(" ,"), q[m.end():].strip(" ,")
        if re.search(r"\bbetween\s+\S+(?:\s+\S+)?$", a, re.IGNORECASE):
            continue
        if (_QWORD.match(b) and terms(a) and terms(b)) or (_substantial(a) and _substantial(b)):
            return [a if a.endswith("?") else a + ("?" if q.endswith("?") else ""), b]
    return []


def decompose(query: str) -> tuple[list[str], str]:
    """Sub-questions of a compound or comparison question, and the rule that fired ('' if none)."""
    for name, rule in (("comparison", _comparison), ("several questions", _multi_question),
                       ("conjunction", _conjunction)):
        subs = rule(query)
        if subs:
            return dedupe(subs)[:MAX_SUBQUERIES], name
    return [], ""


def prf_expand(query: str, feedback: Sequence[tuple[str, float]], n_terms: int) -> tuple[str, list[tuple[str, float]]]:
    """RM3-style pseudo-relevance feedback: the query plus the top ``n_terms`` of the feedback documents.

    ``feedback`` is ``(text, bm25 score)`` of the top hits. A term's weight is Σ_d P(w|d)·P(d|q), with
    P(w|d) its relative frequency in d and P(d|q) the document's share of the feedback scores; stopwords,
    query terms and numbers are left out. Returns the expanded query and the weighted terms.

    The keyword store scores each query term as one clause, so the original query is written twice:
    that is RM3's interpolation (original query weight λ ≈ 2/3 against the expansion terms), which keeps
    the expansion from drifting away from the question.
    """
    total = sum(max(s, 0.0) for _, s in feedback) or float(len(feedback) or 1)
    own = set(terms(query))
    weights: Counter[str] = Counter()
    for text, score in feedback:
        toks = [t for t in terms(text) if len(t) > 2 and not t.isdigit()]
        if not toks:
            continue
        p_doc = (max(score, 0.0) / total) if total else 1.0 / len(feedback)
        for term, tf in Counter(toks).items():
            if term not in own:
                weights[term] += p_doc * tf / len(toks)
    top = [(t, round(w, 4)) for t, w in weights.most_common(n_terms)]
    expanded = " ".join([query, query, *(t for t, _ in top)]) if top else query  # see the docstring
    return expanded, top


class RulesTransformer:
    """Offline transformation: normalisation + rule-based decomposition (PRF runs in the BM25 branch)."""

    name = "rules"
    blocking = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RulesTransformer:
        return cls()

    def transform(self, query: str) -> TransformResult:
        text = normalize(query)
        subs, rule = decompose(text)
        trace = [f"rules: normalized {text!r}"]
        trace.append(f"rules: {rule} -> {len(subs)} sub-questions" if subs else "rules: no decomposition")
        return TransformResult(normalized=text, subqueries=subs, trace=trace)


class NoTransformer:
    name = "none"
    blocking = False

    @classmethod
    def from_settings(cls, settings: Settings) -> NoTransformer:
        return cls()

    def transform(self, query: str) -> TransformResult:
        return TransformResult(normalized=normalize(query), trace=["none: query used as given"])


_LLM_PROMPT = (
    "You rewrite search queries for a retrieval system. For the user's question, return ONLY a JSON object "
    'of the form {"subquestions": [...], "rewrites": [...]}: 3 to 5 short, self-contained sub-questions '
    "that together cover the question (an empty list if it is already atomic), and 1 to 3 rewrites that "
    "say the same thing with other words. No prose, no markdown."
)


class LLMTransformer:
    """Sub-questions and rewrites from an OpenAI-compatible chat model; rules on any failure."""

    name = "llm"
    blocking = True

    def __init__(self, client: ChatClient, timeout_s: float, fallback: QueryTransformer | None = None) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.fallback = fallback or RulesTransformer()

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMTransformer:
        llm = settings.llm
        if not llm.url:
            raise ConfigError("llm.url", "is required when retrieval.transform = llm")
        client = ChatClient(llm.url, llm.model, api_key_env=llm.api_key_env, timeout_s=llm.timeout_s, max_retries=0)
        return cls(client, timeout_s=settings.retrieval.transform_timeout_s)

    def transform(self, query: str) -> TransformResult:
        text = normalize(query)
        messages = [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": text}]
        try:
            raw = self.client.complete(messages, max_tokens=300, temperature=0.0, timeout_s=self.timeout_s)
            subs, rewrites = parse_llm_json(raw)
        except QueryError as exc:
            return self._fallback(text, f"llm failed ({exc}); fell back to rules")
        except (ValueError, TypeError) as exc:
            return self._fallback(text, f"llm returned bad JSON ({exc}); fell back to rules")
        trace = [f"llm: {len(subs)} sub-questions, {len(rewrites)} rewrites from {self.client.model or 'model'}"]
        return TransformResult(normalized=text, subqueries=subs, rewrites=rewrites, trace=trace)

    def _fallback(self, text: str, why: str) -> TransformResult:
        res = self.fallback.transform(text)
        return TransformResult(res.normalized, res.subqueries, res.rewrites, [f"llm: {why}", *res.trace])


def parse_llm_json(raw: str) -> tuple[list[str], list[str]]:
    """``(subquestions, rewrites)`` from the model's reply; ValueError (not JSON) or TypeError (JSON of the
    wrong shape) otherwise."""
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    data = json.loads(raw[start: end + 1])
    if not isinstance(data, dict):
        raise TypeError("reply is not a JSON object")
    out: list[list[str]] = []
    for key in ("subquestions", "rewrites"):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise TypeError(f"{key!r} must be a list of strings")
        out.append(dedupe(x.strip() for x in items if x.strip())[:MAX_SUBQUERIES])
    return out[0], out[1]
