"""Answers with citations. Every generator gets the final sources numbered [1]..[n] and returns an
``Answer`` whose citations map each [n] back to the chunk, document and page.

- ``extractive`` (offline default): the passages of the sources that best answer the question, by term
  overlap and, with the engine's embedder, by meaning; neighbouring passages merged into one quote, each
  quote cited (``extractive.py``). No language model; the answer says so.
- ``openai``: any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp's server, OpenAI), plain or
  streamed; see docs/llm.md.
- ``llama-cpp``: a GGUF model in-process through llama-cpp-python (extra ``llm``, which compiles llama.cpp
  from source when it installs).

A model's answer is grounded by its prompt (cite [n] after every sentence; reply "The sources do not
contain the answer." when they do not) and checked after generation, streamed or not: each sentence
against the sources it cites (``grounding.py``); ``Answer.unsupported`` lists the sentences that no cited
source supports.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from ..errors import MissingExtraError, require
from ..settings import LLMSettings
from ..types import Hit
from .chat import ChatClient, Message
from .extractive import Limits, Scoring, VectorCache, candidates, merge, pick, score
from .grounding import NOT_IN_SOURCES, SentenceSupport, SupportChecker, declines, unsupported

if TYPE_CHECKING:
    from ..embed.base import Embedder

OnToken = Callable[[str], None]
EXTRACTIVE_LABEL = "Extractive answer (sentences quoted from the sources; no language model was used):"
NO_SOURCES = "No committed document matched the question."
NO_MATCH = "No passage of the retrieved sources matches the question."


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
    """``support`` has one entry per sentence of a model's answer (empty for quotes, which are the sources'
    own words, and when checking is off); ``declined``: the model said the sources do not answer."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    backend: str = "extractive"
    extractive: bool = True
    support: list[SentenceSupport] = field(default_factory=list)
    declined: bool = False

    @property
    def unsupported(self) -> list[int]:
        """Indices (into ``support``) of the sentences that no cited source supports."""
        return unsupported(self.support)


@runtime_checkable
class Generator(Protocol):
    name: str
    litm: bool  # whether sources should be given in lost-in-the-middle order

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer: ...


def cite(n: int, hit: Hit) -> Citation:
    return Citation(n=n, chunk_id=hit.chunk_id, doc_id=hit.doc_id, source=hit.source, page=hit.page)


def _vectors(embedder: Embedder | None) -> VectorCache | None:
    return VectorCache(embedder) if embedder is not None else None


# ---------------------------------------------------------------------------------------------- extractive


class ExtractiveGenerator:
    """Quotes the passages that best answer the question, each quote followed by its source's [n].

    With ``embedder`` (the retriever passes the engine's own) passages are scored by meaning as well as
    by term overlap (see ``Scoring``); without one, by term overlap only.
    """

    name = "extractive"
    litm = False  # no model reads the context; keep sources in relevance order so [1] is the best

    def __init__(self, embedder: Embedder | None = None, *, max_sentences: int = 3, per_source: int = 2,
                 limits: Limits | None = None, scoring: Scoring | None = None) -> None:
        self.max_sentences = max_sentences
        self.per_source = per_source
        self.limits = limits or Limits()
        self.scoring = scoring or Scoring()
        self.vectors = _vectors(embedder)

    @classmethod
    def from_settings(cls, cfg: LLMSettings, embedder: Embedder | None = None) -> ExtractiveGenerator:
        if cfg.extractive_embed == 0:
            return cls()
        return cls(embedder, scoring=Scoring(max_embed=cfg.extractive_embed))

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer:
        cands = candidates([hit.text for hit in sources], self.limits)
        scores = score(query, cands, self.scoring, self.vectors)
        quotes = merge(pick(cands, scores, self.max_sentences, self.per_source, self.scoring.min_score))
        cited: list[int] = []
        if not sources:
            text = NO_SOURCES
        elif not quotes:
            text = NO_MATCH
        else:
            text = "\n".join([EXTRACTIVE_LABEL, *(f"{q.render()} [{q.n}]" for q in quotes)])
            cited = sorted({q.n for q in quotes})
        if on_token:
            on_token(text)
        return Answer(text, [cite(n, sources[n - 1]) for n in cited], backend=self.name, extractive=True)


# --------------------------------------------------------------------------------------------------- LLMs

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given.\n"
    "- End every sentence with the number of the source that supports it, in square brackets: [1], or "
    "[2][3] when it uses several.\n"
    "- State only what the sources say: no outside knowledge, no guesses. Copy figures exactly.\n"
    f'- If the sources do not contain the answer, reply exactly "{NOT_IN_SOURCES}" and nothing else.\n'
    "- Be concise: the answer first, then the details that support it."
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
    """Shared by the LLM backends: build the prompt, run the model, parse citations, check support."""

    litm = True
    name = "llm"

    def __init__(self, cfg: LLMSettings, embedder: Embedder | None = None) -> None:
        self.cfg = cfg
        self.checker = SupportChecker(_vectors(embedder)) if cfg.check_support else None

    @classmethod
    def from_settings(cls, cfg: LLMSettings, embedder: Embedder | None = None) -> Self:
        return cls(cfg, embedder=embedder)

    @abstractmethod
    def _run(self, messages: list[Message], on_token: OnToken | None) -> str:
        """The model's reply to ``messages``; ``on_token`` (if given) sees each streamed delta."""

    def generate(self, query: str, sources: Sequence[Hit], on_token: OnToken | None = None) -> Answer:
        if not sources:
            return Answer(NO_SOURCES, [], backend=self.name, extractive=False)
        text = self._run(build_messages(query, sources, self.cfg.system_prompt), on_token).strip()
        support = self.checker.check(text, sources) if self.checker else []
        return Answer(text, parse_citations(text, sources), backend=self.name, extractive=False, support=support,
                      declined=declines(text))


class OpenAIGenerator(_ChatGenerator):
    name = "openai"

    def __init__(self, cfg: LLMSettings, client: ChatClient | None = None, embedder: Embedder | None = None) -> None:
        super().__init__(cfg, embedder)
        self.client = client or ChatClient(cfg.url, cfg.model, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s)

    def _run(self, messages: list[Message], on_token: OnToken | None) -> str:
        if on_token is None:
            return self.client.complete(messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)
        parts = []
        for delta in self.client.stream(messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature):
            parts.append(delta)
            on_token(delta)
        return "".join(parts)


# pip has no llama-cpp-python wheel for this platform: installing the extra compiles llama.cpp.
LLAMA_CPP_FEATURE = ("llm backend llama-cpp (llama-cpp-python compiles llama.cpp from source when it installs: it "
                     "needs a C/C++ compiler and CMake and takes minutes; or serve the model with any "
                     "OpenAI-compatible server and set llm.backend = openai, see docs/llm.md)")


class LlamaCppGenerator(_ChatGenerator):
    """A local GGUF model. Loaded on first use (loading takes seconds; construction must stay cheap)."""

    name = "llama-cpp"

    def __init__(self, cfg: LLMSettings, embedder: Embedder | None = None) -> None:
        super().__init__(cfg, embedder)
        self._llama: Any = None

    def warm_up(self) -> None:
        if self._llama is None:
            try:
                llama_cpp = require("llama_cpp", feature="llm backend llama-cpp", extra="llm")
            except MissingExtraError as exc:
                raise MissingExtraError(LLAMA_CPP_FEATURE, "llm", "llama_cpp") from exc
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
