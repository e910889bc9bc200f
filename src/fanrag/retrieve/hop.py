"""The hop branch: a second retrieval hop through what the first hop found, and comparisons split by
the names the index knows.

A bridge question names A and asks about B, which only A's passage names ("When was the author of Snow
Country born?": Snow Country's passage names Yasunari Kawabata, and his passage has the year). One search
finds A and rarely B. Per question the branch:

1. splits a comparison into one sub-question per side (``EntityDecomposer``: two or more names the entity
   graph knows, coordinated), else keeps the question whole;
2. per sub-question, a first hop: BM25, whose top chunks hold the named entity's passage nearly always;
3. takes the sub-question's content words that the top chunk and its title lack; none missing (words
   that only say how the question asks or compares aside) means the first hop is confident: no second
   hop for this sub-question;
4. else takes bridge candidates: an LLM-proposed bridge (``TransformResult.bridges``) first, then, chunk by
   chunk, the parts of the title and the names in the text of the top chunks that the graph knows, that
   the question does not contain, and that lead somewhere specific: mentioned in two chunks or more (a
   name only its own chunk mentions finds nothing new) and in at most ``MAX_DF_SHARE`` of the index (a
   section heading found everywhere leads nowhere);
5. searches again, BM25 over the missing words and the first ``MAX_BRIDGES`` bridges. The words the first
   hop already matched are left out: they would only pull its passages up again, and the other branches
   rank those anyway. B's own passage names B and says what A's lacked, so it rises.

Lists: one per second hop (per side of a comparison), of kind ``hop`` (one fusion weight). A side's first
hop is not returned: on both dev sets those lists cost nDCG@10 (they lift the named entity's other
passages over the passages the whole question finds), while the second hops carry the gain. A question
without "?" or a question word (a claim, a keyword query) is skipped: it asks for no hop.

Why a branch with its own first hop rather than a step after the fan-out that reuses the fused results:
BM25 alone puts the first passage in its top 2 chunks (the ones the branch reads) for 95 % of the
multi-hop dev set's bridge questions, in well under a millisecond, so the branch runs beside the others
and a query still waits for its slowest branch (dense, a few ms), not for a second round. A dependent
step would add its whole time, and a second fusion, to every query. The branch costs one or two BM25
searches per sub-question, a regex extraction over two chunks and a few graph look-ups
(bench/multihop.py reports its time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..graph.extract import normalise
from ..stores.base import Allowed, ScoredId
from ..types import BranchName, Chunk
from .branches import BranchOutput, search_keywords
from .results import RankedList
from .text import stem, stems, terms
from .transform import EntityDecomposer, TransformResult, is_question

if TYPE_CHECKING:
    from ..graph.extract import EntityExtractor
    from ..stores.base import GraphStore, KeywordStore, MetaStore

KIND = "hop"
FIRST_K = 10  # first-hop hits (only the top SOURCE_CHUNKS are read)
SOURCE_CHUNKS = 2  # top first-hop chunks whose names are bridge candidates
MAX_BRIDGES = 3  # candidates added to the second-hop query
MAX_CHECKS = 8  # candidates checked for leading somewhere (one graph look-up each)
# A bridge is specific: mentioned in at most this share of the index's chunks (the dev sets' gold bridges
# are in 0.02-1 % of them; a fact book's section headings and "TV" in 2-3 % and more), or in MIN_DF_LIMIT
# chunks in a small index.
MAX_DF_SHARE = 0.02
MIN_DF_LIMIT = 20
COUNT_EVERY_S = 60.0
# Words that say how a question asks ("how many", "what is it called") or compares ("born first", "the
# larger"), not what a passage must contain: a first hop is not doubted for lacking them.
_ASKING = frozenset({
    "many", "much", "long", "old", "far", "often", "called", "named", "known", "kind", "sort", "type", "whose",
    "exactly", "approximately", "roughly", "first", "last", "earlier", "later", "earliest", "latest", "older",
    "younger", "oldest", "youngest", "higher", "lower", "highest", "lowest", "larger", "smaller", "largest",
    "smallest", "bigger", "biggest", "longer", "shorter", "longest", "shortest", "greater", "greatest", "fewer",
    "less", "least", "same", "different"})
# A title names what its document is about ("Mexico: Communications"): its parts are candidates as they
# stand, since the extractor drops a lone capitalised word at the start of a text.
_TITLE_PARTS = re.compile(r"\s*(?:[:;|/,(){}\[\]]|\s[-–—]\s)\s*")


def _word_set(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class HopBranch:
    """Comparisons split by known names, and a second BM25 hop through a bridge entity (module docstring)."""

    name = BranchName.HOP
    takes_filter = True  # both hops search the allowed documents only: a bridge comes from what the user may see

    def __init__(self, keywords: KeywordStore, meta: MetaStore, graph: GraphStore | None,
                 extractor: EntityExtractor | None) -> None:
        self.keywords = keywords
        self.meta = meta
        self.graph = graph
        self.decomposer = EntityDecomposer(graph, extractor) if graph is not None and extractor is not None else None
        self._df_limit = (0.0, MIN_DF_LIMIT)  # (when counted, limit): see df_limit

    def skip_reason(self, t: TransformResult) -> str:
        if self.decomposer is None:
            return "skipped: no entity extractor or graph store"
        if not (t.bridges or is_question(t.normalized)):  # a claim or a keyword query asks for no hop
            return "skipped: not a question"
        return ""

    def run(self, t: TransformResult, k: int, parallel: bool, allowed: Allowed | None = None) -> BranchOutput:
        """Each side's searches depend on each other and take well under a millisecond, so they run one
        after another whatever ``parallel`` says."""
        assert self.decomposer is not None  # skip_reason said so
        subs, mentions = self.decomposer.decompose(t.normalized)
        lists: list[RankedList] = []
        trace: list[str] = []
        if subs:
            trace.append(f"hop: comparison of {', '.join(m.name for m in mentions)} -> {len(subs)} sub-questions")
        for sub in subs or [t.normalized]:
            second, line = self._second_hop(sub, search_keywords(self.keywords, sub, FIRST_K, allowed), t.bridges, k, allowed)
            lists += second
            trace.append(line)
        if not lists:
            return BranchOutput([], "skipped: " + "; ".join(line.removeprefix("hop: ") for line in trace))
        return BranchOutput(lists, trace=tuple(trace))

    def _second_hop(self, sub: str, first: Sequence[ScoredId], proposed: Sequence[str],
                    k: int, allowed: Allowed | None) -> tuple[list[RankedList], str]:
        top = [h.chunk_id for h in first[:SOURCE_CHUNKS]]
        got = self.meta.get_chunks(top)
        chunks = [got[c] for c in top if c in got]
        if not chunks:
            return [], f"hop: nothing found for {sub!r}"
        titles = self._titles(chunks)
        missing = self._missing(sub, chunks[0], titles)
        if not (missing or proposed):
            return [], f"hop: first hop confident for {sub!r}"
        bridges = self._choose(_word_set(sub), proposed, chunks, titles)
        if not bridges:
            return [], f"hop: no bridge in the first hop of {sub!r}"
        query = " ".join([*missing, *bridges])
        return [RankedList(self.name, KIND, query, search_keywords(self.keywords, query, k, allowed))], \
            f"hop: {sub!r} via {', '.join(bridges)}"

    def _choose(self, own: set[str], proposed: Sequence[str], chunks: Sequence[Chunk],
                titles: dict[str, str]) -> list[str]:
        """The proposed bridges the question does not name, then the index's, up to MAX_BRIDGES (at least
        one of the index's, in case a proposal is wrong)."""
        bridges = [b for b in proposed if not _word_set(b) <= own]
        taken = {normalise(b) for b in bridges}  # the index may find a proposed bridge too
        fresh = [n for n in self._bridges(own, chunks, titles) if n not in taken]
        return bridges + fresh[: max(1, MAX_BRIDGES - len(bridges))]

    @staticmethod
    def _missing(sub: str, chunk: Chunk, titles: dict[str, str]) -> list[str]:
        """The content words of the sub-question that the top chunk and its title lack (compared stemmed);
        none missing means the first hop is already confident."""
        have = set(stems(f"{titles.get(chunk.doc_id, '')}\n{chunk.indexed_text}"))
        return [w for w in dict.fromkeys(terms(sub)) if w not in _ASKING and stem(w) not in have]

    def _titles(self, chunks: Sequence[Chunk]) -> dict[str, str]:
        docs = {c.doc_id: self.meta.get_document(c.doc_id) for c in chunks}
        return {d: rec.title for d, rec in docs.items() if rec is not None and rec.title}

    def _bridges(self, own: set[str], chunks: Sequence[Chunk], titles: dict[str, str]) -> list[str]:
        """Names in the chunks that the graph knows, that the question does not contain, and that lead
        somewhere specific (``_leads_somewhere``); chunk by chunk in rank order, each one's title first."""
        assert self.graph is not None and self.decomposer is not None
        found = self.decomposer.extractor.extract([c.indexed_text for c in chunks])
        names: list[str] = []
        for chunk, ents in zip(chunks, found, strict=True):
            names += [normalise(part) for part in _TITLE_PARTS.split(titles.get(chunk.doc_id, ""))]
            names += [n for n, _ in ents]
        names = [n for n in dict.fromkeys(names) if n and not _word_set(n) <= own]
        known = self.graph.known_entities(names) if names else []
        limit = self.df_limit()
        out: list[str] = []
        for name in known[:MAX_CHECKS]:
            if len(out) == MAX_BRIDGES:
                break
            if self._leads_somewhere(name, limit):
                out.append(name)
        return out

    def df_limit(self) -> int:
        """The most chunks a bridge may be mentioned in: MAX_DF_SHARE of the index, counted at most once
        a minute (a count reopens the keyword index's reader; the size moves slowly). Threads racing here
        only count twice."""
        counted, limit = self._df_limit
        now = time.monotonic()
        if now - counted > COUNT_EVERY_S or counted == 0.0:
            limit = max(MIN_DF_LIMIT, int(MAX_DF_SHARE * self.keywords.count()))
            self._df_limit = (now, limit)
        return limit

    def _leads_somewhere(self, name: str, limit: int) -> bool:
        """Whether two to ``limit`` chunks mention ``name``: a name only its own chunk mentions leads
        nowhere, and one in more than ``limit`` chunks (a section heading, "TV" in a fact book) leads
        everywhere, which is nowhere either."""
        assert self.graph is not None
        return 2 <= len(self.graph.chunks_for_entities([name], limit + 1, hops=0)) <= limit
