"""Query transformation: the sequential step before the fan-out, and the decomposers the branches use.

``rules`` (the offline default) normalises the text and splits compound and comparison questions into
sub-questions with a few patterns. Its pseudo-relevance-feedback expansion (RM3-style) depends on a first
BM25 search, so the retriever calls ``prf_expand`` inside the BM25 branch rather than here: the other
branches do not wait.

``EntityDecomposer`` splits comparisons by what the index knows rather than by patterns: the names in the
question that the entity graph holds (``Pride and Prejudice`` is one name, so it is never split at its
"and"), and one sub-question per side where two or more of them are coordinated ("A or B", "the author of
A and the director of B", "A, B or C", "A larger than B"), the shared predicate kept on every side. It
needs the stores, which the transformer does not have (``create_transformer`` builds it from settings
alone, before any index is open), so the hop branch (``hop.py``) runs it inside the fan-out, where its
look-ups (well under a millisecond) overlap the other branches instead of delaying them all.

``llm`` asks an OpenAI-compatible chat endpoint, in one call, for sub-questions, 3-5 rewrites and the
bridge entity a multi-hop question refers to without naming it (for the hop branch), as JSON with a fixed
schema (``response_format`` json where the server accepts it), under a wall-clock deadline; on timeout,
transport error or a reply outside the schema it falls back to ``rules`` and says why in the trace.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import ConfigError, QueryError
from ..graph.extract import query_ngrams
from ..settings import Settings
from .chat import ChatClient
from .text import dedupe, terms, words

if TYPE_CHECKING:
    from ..graph.extract import EntityExtractor
    from ..stores.base import GraphStore

MAX_SUBQUERIES = 5


@dataclass(frozen=True, slots=True)
class TransformResult:
    normalized: str
    subqueries: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    # Entities a multi-hop question refers to without naming them ("the author of X" -> the author), as an
    # LLM proposed them; the hop branch searches with them before any bridge it finds in the index.
    bridges: list[str] = field(default_factory=list)

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


def is_question(q: str) -> bool:
    """A question (ends with '?' or starts with a question word or an auxiliary), not a statement."""
    return q.rstrip().endswith("?") or bool(_QWORD.match(q))


def _substantial(text: str) -> bool:
    return len(terms(text)) >= 3 and len(words(text)) >= 4


def _comparison(q: str) -> list[str]:
    body = q.rstrip("?. ")
    patterns = [*_COMPARE, _COMPARED_TO] if is_question(q) else _COMPARE
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
    if not is_question(q):
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


# ------------------------------------------------------------------------- index-aware decomposition

MAX_SIDES = 3  # sub-questions of one comparison: more sides are rare and each costs a search
_COORD_WORD = re.compile(r"\b(?:or|and|nor|vs\.?|versus|than)\b", re.IGNORECASE)
_MAX_GAP_WORDS = 8  # more words than this between two names: two clauses, not one coordination
_MAX_LEFT_WORDS = 4  # how far a side reaches left of its name ("the author of Summa Theologica")
# A question word between two names starts a second question ("... Bohr and what did Heisenberg say?").
_NEW_CLAUSE = re.compile(r"\b(?:what|which|who|whom|whose|when|where|why|how)\b", re.IGNORECASE)
# A side stops growing leftwards at a question word, an auxiliary or another coordinator.
_SIDE_STOP = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "was",
                        "were", "does", "do", "did", "can", "could", "should", "will", "would", "has", "have",
                        "had", "between", "than", "or", "and", "nor", "vs", "versus"})


@dataclass(frozen=True, slots=True)
class Mention:
    """A name the index knows, found in a query: normalised as the graph holds it, and where it sits."""

    name: str
    start: int
    end: int


def find_mentions(query: str, names: Iterable[str]) -> list[Mention]:
    """Where each name occurs in ``query`` (case, and punctuation between words, ignored), in query order.
    Where mentions overlap the longest wins, so "Pride and Prejudice" hides "Prejudice"."""
    found: list[Mention] = []
    for name in dict.fromkeys(names):
        parts = re.findall(r"\w+", name)
        if not parts:
            continue
        hit = re.search(r"(?<!\w)" + r"\W+".join(map(re.escape, parts)) + r"(?!\w)", query, re.IGNORECASE)
        if hit:
            found.append(Mention(name, hit.start(), hit.end()))
    kept: list[Mention] = []
    for m in sorted(found, key=lambda m: (m.start - m.end, m.start)):  # longest first
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)


def split_coordination(query: str, mentions: Sequence[Mention]) -> list[str]:
    """One sub-question per side where two or more mentions are coordinated ("A or B", "A, B and C",
    "the author of A and the director of B", "A larger than B"); [] when none are.

    Each sub-question is the query with the other sides removed, so every side keeps the shared
    predicate: "Who was born first, Jacques Derrida or Jan Hus?" -> "Who was born first, Jacques
    Derrida?" and "Who was born first, Jan Hus?".
    """
    chain = _coordinated(query, mentions)
    if not chain:
        return []
    (first, _), (second, (c0, c1)) = chain[0], chain[1]
    # sides are parallel: the first reaches as many words left of its name as the second has before its
    # own ("the author of A and the director of B", "the GDP of A, and of B", "A or B")
    start = _side_start(query, first.start, mentions, len(re.findall(r"\w+", query[c1:second.start])))
    comparative = query[c0:c1].lower() == "than"  # "A larger than B": the words before "than" are shared
    shared = query[first.end:c0] if comparative else ""
    sides = [query[start: first.end if comparative else c0]]
    sides += [query[coord_end: m.end] for m, (_, coord_end) in chain[1:]]
    head, tail = query[:start], query[chain[-1][0].end:]
    subs = [re.sub(r"\s+([?.!,])", r"\1", " ".join(f"{head}{side.strip(' ,')}{shared}{tail}".split()))
            for side in sides]
    return dedupe(subs)[:MAX_SIDES]


def _coordinated(query: str, mentions: Sequence[Mention]) -> list[tuple[Mention, tuple[int, int]]]:
    """The first run of two or more mentions joined by coordinators, each with the span of the coordinator
    before it (the first mention's is empty). Commas join names only in a run that a word ends ("A, B or
    C"): a comma alone also ends a clause ("GDP per capita in 2024, Egypt or ...")."""
    run: list[tuple[Mention, tuple[int, int]]] = []
    for m in mentions:
        joint = _joint(query, run[-1][0].end, m.start) if run else None
        if run and joint is None:
            if _is_coordination(query, run):
                break
            run = []
        run.append((m, joint or (m.start, m.start)))
    return run if _is_coordination(query, run) else []


def _is_coordination(query: str, run: Sequence[tuple[Mention, tuple[int, int]]]) -> bool:
    return len(run) >= 2 and query[run[-1][1][0]: run[-1][1][1]] != ","


def _joint(query: str, a: int, b: int) -> tuple[int, int] | None:
    """The span of the coordinator joining the names that end at ``a`` and start at ``b``: the last
    coordinating word between them (at most ``_MAX_GAP_WORDS`` words apart), or a comma with at most an
    article after it; None when the text between is no coordination, opens or closes a bracket, or starts
    another question."""
    between = query[a:b]
    if (re.search(r"[?!;()\[\]]", between) or len(between.split()) > _MAX_GAP_WORDS
            or _NEW_CLAUSE.search(between)):
        return None
    words_ = list(_COORD_WORD.finditer(between))
    if words_:
        return a + words_[-1].start(), a + words_[-1].end()
    if re.fullmatch(r"\s*,\s*(?:(?:the|a|an)\s+)?", between, re.IGNORECASE):
        comma = between.index(",")
        return a + comma, a + comma + 1
    return None


def _side_start(query: str, pos: int, mentions: Sequence[Mention], words_left: int) -> int:
    """Where the first side starts: up to ``words_left`` words left of its name (at most
    ``_MAX_LEFT_WORDS``), stopping at punctuation, a question word or auxiliary, or another name."""
    start = pos
    for _ in range(min(words_left, _MAX_LEFT_WORDS)):
        m = re.search(r"([\w'-]+)(\W*)$", query[:start])
        if (not m or re.search(r"[,;:?!(]", m.group(2)) or m.group(1).lower() in _SIDE_STOP
                or any(k.start <= m.start(1) < k.end for k in mentions)):
            break
        start = m.start(1)
    return start


class EntityDecomposer:
    """Comparisons split by the names the index knows (see the module docstring). Cheap: one regex
    extraction of the query and one ``known_entities`` look-up."""

    def __init__(self, graph: GraphStore, extractor: EntityExtractor) -> None:
        self.graph = graph
        self.extractor = extractor

    def mentions(self, query: str) -> list[Mention]:
        """The names in ``query`` that the entity graph holds: the extractor's names, and word n-grams of
        two or more words (a title typed in lower case); single words too when the whole query is in lower
        case, where the extractor's capitals say nothing."""
        names = [n for n, _ in self.extractor.extract([query])[0]]
        grams = query_ngrams(query)
        if query != query.lower():
            grams = [g for g in grams if " " in g]
        candidates = list(dict.fromkeys([*names, *grams]))
        return find_mentions(query, self.graph.known_entities(candidates) if candidates else [])

    def decompose(self, query: str) -> tuple[list[str], list[Mention]]:
        """The sub-questions of a comparison between known names ([] if it is none) and the mentions."""
        mentions = self.mentions(query)
        return split_coordination(query, mentions), mentions


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
    weights: dict[str, float] = defaultdict(float)
    for text, score in feedback:
        toks = [t for t in terms(text) if len(t) > 2 and not t.isdigit()]
        if not toks:
            continue
        p_doc = (max(score, 0.0) / total) if total else 1.0 / len(feedback)
        for term, tf in Counter(toks).items():
            if term not in own:
                weights[term] += p_doc * tf / len(toks)
    # sorted() is stable: equal weights keep the order of first appearance (as Counter.most_common does)
    top = [(t, round(w, 4)) for t, w in sorted(weights.items(), key=lambda kv: -kv[1])[:n_terms]]
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


# The reply's JSON schema, given to the model in the prompt; where the server takes it, ``response_format``
# json_object also makes the model emit JSON only. One call gives all three lists.
_MAX_ITEMS = {"subquestions": MAX_SUBQUERIES, "rewrites": 5, "bridges": 3}


def _strings(most: int, least: int = 0) -> dict[str, object]:
    return {"type": "array", "items": {"type": "string"}, "minItems": least, "maxItems": most}


LLM_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"subquestions": _strings(MAX_SUBQUERIES), "rewrites": _strings(5, 3), "bridges": _strings(3)},
    "required": list(_MAX_ITEMS),
    "additionalProperties": False,
}
MAX_ITEM_CHARS = 300  # a longer "sub-question" is the model rambling, not a query
_REFUSED = re.compile(r"HTTP (?:400|422)\b")  # how ChatClient reports a request the server will not take

_LLM_PROMPT = (
    "You prepare a user's question for a search engine. Reply with ONE JSON object and nothing else, valid "
    "against this JSON schema:\n" + json.dumps(LLM_SCHEMA) + "\n"
    "subquestions: if answering needs several facts (a comparison; a question about something it describes "
    "without naming, like 'the author of X'), 2 to 5 short self-contained questions of one fact each; [] if "
    "the question is already atomic.\n"
    "rewrites: 3 to 5 rephrasings of the whole question in other words (synonyms, the words an answer would "
    "use).\n"
    "bridges: the names of the things the question describes without naming (for 'When was the author of X "
    "born?', the author's name), only when you know them; else [].\n"
    "No prose, no markdown."
)


@dataclass(frozen=True, slots=True)
class LLMReply:
    subquestions: list[str]
    rewrites: list[str]
    bridges: list[str]


class LLMTransformer:
    """Sub-questions, rewrites and bridges from an OpenAI-compatible chat model in one call; rules on any
    failure.

    ``timeout_s`` is a wall-clock deadline for the whole step (httpx's timeouts bound each phase of a
    request, not their sum): the call runs in a small pool of its own and the transform stops waiting at
    the deadline. A server that refuses ``response_format`` (HTTP 400/422) is asked again without it,
    within the same deadline, and is not sent it again.
    """

    name = "llm"
    blocking = True

    def __init__(self, client: ChatClient, timeout_s: float, fallback: QueryTransformer | None = None) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.fallback = fallback or RulesTransformer()
        self.json_mode = True
        self._calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fanrag-transform")

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMTransformer:
        llm = settings.llm
        if not llm.url:
            raise ConfigError("llm.url", "is required when retrieval.transform = llm")
        client = ChatClient(llm.url, llm.model, api_key_env=llm.api_key_env, timeout_s=llm.timeout_s, max_retries=0)
        return cls(client, timeout_s=settings.retrieval.transform_timeout_s)

    def transform(self, query: str) -> TransformResult:
        text = normalize(query)
        try:
            reply = parse_llm_reply(self._ask(text, time.monotonic() + self.timeout_s))
        except QueryError as exc:
            return self._fallback(text, f"llm failed ({exc}); fell back to rules")
        except (ValueError, TypeError) as exc:
            return self._fallback(text, f"llm returned bad JSON ({exc}); fell back to rules")
        counts = f"{len(reply.subquestions)} sub-questions, {len(reply.rewrites)} rewrites, {len(reply.bridges)} bridges"
        trace = [f"llm: {counts} from {self.client.model or 'model'}"]
        return TransformResult(normalized=text, subqueries=reply.subquestions, rewrites=reply.rewrites, trace=trace,
                               bridges=reply.bridges)

    def _ask(self, text: str, deadline: float) -> str:
        messages = [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": text}]
        if self.json_mode:
            try:
                return self._complete(messages, deadline, {"response_format": {"type": "json_object"}})
            except QueryError as exc:
                if not _REFUSED.search(str(exc)):
                    raise
                self.json_mode = False  # this server takes no response_format: the prompt alone from now on
        return self._complete(messages, deadline, None)

    def _complete(self, messages: list[dict[str, str]], deadline: float, extra: dict[str, object] | None) -> str:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QueryError(f"llm {self.client.url}: timed out after {self.timeout_s:g} s")
        call = self._calls.submit(self.client.complete, messages, max_tokens=400, temperature=0.0,
                                  timeout_s=remaining, extra=extra)
        try:
            return call.result(timeout=remaining)
        except FutureTimeout:
            raise QueryError(f"llm {self.client.url}: timed out after {self.timeout_s:g} s") from None

    def _fallback(self, text: str, why: str) -> TransformResult:
        res = self.fallback.transform(text)
        return TransformResult(res.normalized, res.subqueries, res.rewrites, [f"llm: {why}", *res.trace])


def parse_llm_reply(raw: str) -> LLMReply:
    """The model's reply checked against ``LLM_SCHEMA``: ValueError when it holds no JSON object, TypeError
    when the object has the wrong shape (a missing or ill-typed list). A code fence or words around the
    object are tolerated; unknown keys are ignored; blank and duplicate items are dropped, over-long ones
    refused, and each list is cut to its schema's maximum."""
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    data = json.loads(raw[start: end + 1])
    if not isinstance(data, dict):
        raise TypeError("reply is not a JSON object")
    lists: dict[str, list[str]] = {}
    for key, most in _MAX_ITEMS.items():
        if key not in data and key == "bridges":  # optional in practice: older prompts and small models omit it
            lists[key] = []
            continue
        items = data.get(key)
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise TypeError(f"{key!r} must be a list of strings")
        if any(len(x) > MAX_ITEM_CHARS for x in items):
            raise TypeError(f"{key!r} holds an item longer than {MAX_ITEM_CHARS} characters")
        lists[key] = dedupe(x.strip() for x in items if x.strip())[:most]
    return LLMReply(lists["subquestions"], lists["rewrites"], lists["bridges"])


def parse_llm_json(raw: str) -> tuple[list[str], list[str]]:
    """``(subquestions, rewrites)`` of ``parse_llm_reply``."""
    reply = parse_llm_reply(raw)
    return reply.subquestions, reply.rewrites
