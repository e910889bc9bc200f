"""Answers with citations. Every generator gets the final sources numbered [1]..[n] and returns an
``Answer`` whose citations map each [n] back to the chunk, document and page.

- ``extractive`` (offline default): the best-matching sentences of the sources, quoted, each with its [n].
  No language model; the answer says so.
- ``openai``: any OpenAI-compatible chat endpoint (plain or streamed).
- ``llama-cpp``: a local GGUF model through llama-cpp-python (extra ``llm``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

from ..errors import require
from ..settings import LLMSettings
from ..types import Hit
from .chat import ChatClient, Message
from .text import looks_like_code, sentences, stems, symbol_share, words

OnToken = Callable[[str], None]
EXTRACTIVE_LABEL = "Extractive answer (sentences quoted from the sources; no language model was used):"
NO_SOURCES = "No committed document matched the question."


@dataclass(frozen=True, slots=True)
class Citation:
    n: int
    chunk_id: str
    doc_id: str
    source: str
    page: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    backend: str = "extractive"
    extractive: bool = True


@runtime_checkable
class Generator(Protocol):
    name: str
    litm: bool  # whether sources should be given in lost-in-the-middle order

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer: ...


def cite(n: int, hit: Hit) -> Citation:
    return Citation(n=n, chunk_id=hit.chunk_id, doc_id=hit.doc_id, source=hit.source, page=hit.page)


# ---------------------------------------------------------------------------------------------- extractive


def _sentence_scores(query: str, sents: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """BM25 of each sentence against the query, with document frequencies taken over these sentences."""
    q = set(stems(query))
    bags = [Counter(stems(s)) for s in sents]
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


class ExtractiveGenerator:
    """Quotes the sentences that best match the question, each followed by its source's [n]."""

    name = "extractive"
    litm = False  # no model reads the context; keep sources in relevance order so [1] is the best

    def __init__(self, max_sentences: int = 3, per_source: int = 2, min_words: int = 4, max_words: int = 60,
                 max_symbols: float = 0.06) -> None:
        self.max_sentences = max_sentences
        self.per_source = per_source
        self.min_words = min_words
        self.max_words = max_words
        self.max_symbols = max_symbols

    @classmethod
    def from_settings(cls, cfg: LLMSettings) -> ExtractiveGenerator:
        return cls()

    def _prose(self, sent: str) -> bool:
        # Quote prose: code and tables split into "sentences" badly and read worse than the chunk itself.
        return (self.min_words <= len(words(sent)) <= self.max_words and symbol_share(sent) <= self.max_symbols
                and not looks_like_code(sent))

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer:
        cands: list[tuple[int, int, str]] = []  # (source number, position, sentence)
        for n, hit in enumerate(sources, start=1):
            cands.extend((n, pos, sent) for pos, sent in enumerate(sentences(hit.text)) if self._prose(sent))
        scores = _sentence_scores(query, [c[2] for c in cands])
        # best score first; a better-ranked source wins ties, then the earlier sentence
        ranked = sorted(zip(scores, cands, strict=True), key=lambda x: (-x[0], x[1][0], x[1][1]))
        picked: list[tuple[int, str]] = []
        per: Counter[int] = Counter()
        seen: set[str] = set()
        for score, (n, _, sent) in ranked:
            key = " ".join(words(sent))
            if score <= 0 or len(picked) >= self.max_sentences:
                break
            if per[n] >= self.per_source or key in seen:
                continue
            picked.append((n, sent))
            per[n] += 1
            seen.add(key)
        if not sources:
            text, cited = NO_SOURCES, []
        elif not picked:
            text, cited = "No sentence in the retrieved sources matches the question's terms.", []
        else:
            text = "\n".join([EXTRACTIVE_LABEL, *(f"{sent} [{n}]" for n, sent in picked)])
            cited = sorted({n for n, _ in picked})
        if on_token:
            on_token(text)
        return Answer(text, [cite(n, sources[n - 1]) for n in cited], backend=self.name, extractive=True)


# --------------------------------------------------------------------------------------------------- LLMs

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given. After every sentence that uses "
    "a source, cite it with its number in square brackets, like [1] or [2][3]. If the sources do not "
    "contain the answer, say that you cannot answer from them. Be concise."
)
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def build_messages(query: str, sources: Sequence[Hit], system_prompt: str = "") -> list[Message]:
    """The grounded prompt: numbered sources (with document and page), then the question."""
    blocks = []
    for n, hit in enumerate(sources, start=1):
        where = hit.source + (f", page {hit.page}" if hit.page else "")
        blocks.append(f"[{n}] ({where})\n{hit.text.strip()}")
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {query}\nAnswer with [n] citations:"
    return [{"role": "system", "content": system_prompt or DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_citations(answer: str, sources: Sequence[Hit]) -> list[Citation]:
    """The sources an answer cites ([1], [2, 3], [2][3]), in order of first citation; unknown numbers dropped."""
    seen: list[int] = []
    for m in _CITATION.finditer(answer):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if 1 <= n <= len(sources) and n not in seen:
                seen.append(n)
    return [cite(n, sources[n - 1]) for n in seen]


class _ChatGenerator(ABC):
    """Shared by the LLM backends: build the prompt, run the model, parse citations."""

    litm = True
    name = "llm"

    def __init__(self, cfg: LLMSettings) -> None:
        self.cfg = cfg

    @classmethod
    def from_settings(cls, cfg: LLMSettings) -> Self:
        return cls(cfg)

    @abstractmethod
    def _run(self, messages: list[Message], on_token: OnToken | None) -> str:
        """The model's reply to ``messages``; ``on_token`` (if given) sees each streamed delta."""

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer:
        if not sources:
            return Answer(NO_SOURCES, [], backend=self.name, extractive=False)
        text = self._run(build_messages(query, sources, self.cfg.system_prompt), on_token)
        return Answer(text.strip(), parse_citations(text, sources), backend=self.name, extractive=False)


class OpenAIGenerator(_ChatGenerator):
    name = "openai"

    def __init__(self, cfg: LLMSettings, client: ChatClient | None = None) -> None:
        super().__init__(cfg)
        self.client = client or ChatClient(cfg.url, cfg.model, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s)

    def _run(self, messages: list[Message], on_token: OnToken | None) -> str:
        if on_token is None:
            return self.client.complete(messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)
        parts = []
        for delta in self.client.stream(messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature):
            parts.append(delta)
            on_token(delta)
        return "".join(parts)


class LlamaCppGenerator(_ChatGenerator):
    """A local GGUF model. Loaded on first use (loading takes seconds; construction must stay cheap)."""

    name = "llama-cpp"

    def __init__(self, cfg: LLMSettings) -> None:
        super().__init__(cfg)
        self._llama: Any = None

    def warm_up(self) -> None:
        if self._llama is None:
            llama_cpp = require("llama_cpp", feature="llm backend llama-cpp", extra="llm")
            self._llama = llama_cpp.Llama(model_path=self.cfg.gguf, n_ctx=4096, verbose=False)

    def _run(self, messages: list[Message], on_token: OnToken | None) -> str:
        self.warm_up()
        kw = {"max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature}
        if on_token is None:
            out = self._llama.create_chat_completion(messages=messages, **kw)
            return str(out["choices"][0]["message"]["content"] or "")
        parts = []
        for chunk in self._llama.create_chat_completion(messages=messages, stream=True, **kw):
            delta = str(chunk["choices"][0].get("delta", {}).get("content") or "")
            if delta:
                parts.append(delta)
                on_token(delta)
        return "".join(parts)
