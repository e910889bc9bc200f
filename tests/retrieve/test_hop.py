"""The hop branch on a small invented corpus: a bridge question reaches the passage that only the first
passage names, a comparison hops on each side, a confident first hop and a statement are left alone, an
LLM-proposed bridge is used (also coming from a fake OpenAI-compatible server through the retriever), and
names that lead nowhere (or everywhere) are no bridges."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from fanrag.graph.extract import RuleExtractor
from fanrag.retrieve import Retriever
from fanrag.retrieve import hop as hop_module
from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.hop import HopBranch
from fanrag.retrieve.transform import LLMTransformer, TransformResult, normalize
from fanrag.settings import Settings
from fanrag.stores.base import DocumentRecord
from fanrag.types import BranchName, Chunk
from tests.retrieve.conftest import HashEmbedder, MemGraph, MemKeywords, MemMeta, MemVectors

PASSAGES = {
    "The Silent Harbour": "The Silent Harbour is a 1931 novel by the Welsh writer Mara Ellison. It follows the "
                          "lighthouse keeper Tomos Pryce through one winter on the Gower coast.",
    "Mara Ellison": "Mara Ellison was a Welsh novelist and poet, born in 1894 in Swansea. Ellison taught "
                    "school before turning to fiction.",
    "Winter Orchard": "Winter Orchard is a 1952 novel by the Irish author Declan Roe, set on a farm in County "
                      "Clare.",
    "Declan Roe": "Declan Roe was an Irish writer of rural novels and radio plays, born in 1910 in Ennis.",
    "Swansea": "Swansea is a coastal city in Wales, on the Gower peninsula.",
    "Lighthouse": "A lighthouse keeper tends the lamp of a lighthouse on a remote coast.",
}


class Keywords(MemKeywords):
    def count(self) -> int:
        return len(self.docs)

    def search(self, query: str, k: int, allowed: Any = None) -> list[Any]:  # type: ignore[override]
        """Under a filter, the allowed documents' chunks only (a chunk id starts with its doc id)."""
        hits = super().search(query, len(self.docs) if allowed is not None else k)
        return hits if allowed is None else [h for h in hits if h.chunk_id.rsplit("-", 2)[0] in allowed][:k]


def build(tmp_path: Any) -> SimpleNamespace:
    """The passages in the in-memory stores, with entities from the rule extractor (as ingestion does)."""
    extractor, emb = RuleExtractor(), HashEmbedder()
    meta, keywords, graph, vectors = MemMeta(), Keywords(), MemGraph(), MemVectors(emb.dim, 2)
    ids: dict[str, str] = {}
    for i, (title, text) in enumerate(PASSAGES.items()):
        doc_id = f"d{i:020x}"
        ids[title] = doc_id
        chunk = Chunk.make(doc_id, 0, text, char_start=0, char_end=len(text),
                           entities=tuple(extractor.extract([f"{title}\n{text}"])[0]))
        meta.commit(DocumentRecord(doc_id, f"file:///{i}.txt", f"/{i}.txt", "h", "committed", title=title), [chunk])
        keywords.add([chunk])
        graph.add([chunk])
        vectors.add([chunk], emb.embed([text]))
    stores = SimpleNamespace(meta=meta, keywords=keywords, graph=graph, vectors=vectors, blobs=None)
    return SimpleNamespace(stores=stores, extractor=extractor, embedder=emb, ids=ids, settings=Settings(home=tmp_path))


@pytest.fixture
def world(tmp_path: Any) -> SimpleNamespace:
    return build(tmp_path)


def branch(w: SimpleNamespace) -> HopBranch:
    return HopBranch(w.stores.keywords, w.stores.meta, w.stores.graph, w.extractor)


def hop(w: SimpleNamespace, question: str, bridges: tuple[str, ...] = ()) -> Any:
    t = TransformResult(normalize(question), bridges=list(bridges))
    b = branch(w)
    assert b.skip_reason(t) == ""
    return b.run(t, 10, True)


def top_doc(w: SimpleNamespace, hits: list[Any]) -> str:
    return w.stores.meta.get_chunks([hits[0].chunk_id])[hits[0].chunk_id].doc_id


def test_a_bridge_question_reaches_the_passage_only_the_first_one_names(world: SimpleNamespace) -> None:
    out = hop(world, "When was the author of The Silent Harbour born?")
    assert out.status == "ok" and len(out.lists) == 1
    second = out.lists[0]
    assert second.kind == "hop" and second.branch == BranchName.HOP
    assert top_doc(world, second.hits) == world.ids["Mara Ellison"]
    # the second hop searches what the first passage lacked, plus the bridges, not the question again
    assert "mara ellison" in second.query and "Silent" not in second.query
    assert "via" in out.trace[-1] and "mara ellison" in out.trace[-1]


def test_bridges_come_in_passage_order_and_a_name_only_its_passage_mentions_is_none(world: SimpleNamespace) -> None:
    b = branch(world)
    harbour = list(world.stores.meta.get_chunks(list(world.stores.keywords.docs)).values())[:1]
    assert harbour[0].doc_id == world.ids["The Silent Harbour"]
    own = hop_module._word_set("When was the author of The Silent Harbour born?")
    bridges = b._bridges(own, harbour, {harbour[0].doc_id: "The Silent Harbour"})
    # the title's part is the question's own name; the lighthouse keeper is known to the graph, but no other
    # passage mentions him, so he leads nowhere; at most MAX_BRIDGES
    assert world.stores.graph.known_entities(["tomos pryce"]) == ["tomos pryce"]
    assert bridges == ["welsh", "mara ellison", "gower"]


def test_a_name_in_too_many_passages_is_no_bridge(world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hop_module, "MIN_DF_LIMIT", 1)
    b = branch(world)
    assert b.df_limit() == 1  # 2 % of 6 chunks, at least MIN_DF_LIMIT
    assert b._leads_somewhere("mara ellison", 2) and not b._leads_somewhere("mara ellison", 1)
    assert not b._leads_somewhere("tomos pryce", 5)  # only one passage mentions him


def test_under_a_filter_both_hops_search_the_allowed_documents_only(world: SimpleNamespace) -> None:
    t = TransformResult(normalize("When was the author of The Silent Harbour born?"))
    allowed = frozenset({world.ids["The Silent Harbour"], world.ids["Declan Roe"]})  # not Mara Ellison
    out = branch(world).run(t, 10, True, allowed=allowed)
    found = {top_doc(world, [h]) for rl in out.lists for h in rl.hits}
    assert found and found <= allowed
    alone = branch(world).run(t, 10, True)  # unfiltered, the second hop reaches Mara Ellison
    assert world.ids["Mara Ellison"] in {top_doc(world, [h]) for rl in alone.lists for h in rl.hits}


def test_each_side_of_a_comparison_hops(world: SimpleNamespace) -> None:
    out = hop(world, "Whose author was born first, The Silent Harbour or Winter Orchard?")
    assert out.trace[0] == "hop: comparison of silent harbour, winter orchard -> 2 sub-questions"
    assert [top_doc(world, rl.hits) for rl in out.lists] == [world.ids["Mara Ellison"], world.ids["Declan Roe"]]


def test_a_confident_first_hop_is_not_doubted(world: SimpleNamespace) -> None:
    out = hop(world, "Which coastal city is on the Gower peninsula?")
    assert out.lists == [] and out.status.startswith("skipped: first hop confident")


def test_an_llm_bridge_is_searched_even_when_the_first_hop_is_confident(world: SimpleNamespace) -> None:
    out = hop(world, "Which coastal city is on the Gower peninsula?", bridges=("Mara Ellison",))
    assert out.status == "ok" and "Mara Ellison" in out.lists[0].query
    assert world.ids["Mara Ellison"] in {top_doc(world, [h]) for h in out.lists[0].hits[:2]}


def test_statements_and_missing_stores_are_skipped(world: SimpleNamespace) -> None:
    t = TransformResult("Mara Ellison wrote novels about the sea.")
    assert branch(world).skip_reason(t) == "skipped: not a question"
    bare = HopBranch(world.stores.keywords, world.stores.meta, None, world.extractor)
    assert bare.skip_reason(TransformResult("Who wrote it?")) == "skipped: no entity extractor or graph store"


def test_the_retriever_fans_out_to_the_hop_branch(world: SimpleNamespace) -> None:
    with Retriever(world.settings, world.stores, world.embedder, world.extractor) as r:
        res = r.retrieve("When was the author of The Silent Harbour born?", branches=["bm25", "hop"])
    assert res.branches[BranchName.HOP].status == "ok"
    hop_lists = [rl for rl in res.lists if rl.kind == "hop"]
    assert hop_lists and world.ids["Mara Ellison"] in {h.doc_id for h in res.hits}
    assert any(line.startswith("hop: ") for line in res.trace)


def test_an_llm_transformer_hands_its_bridge_to_the_hop(world: SimpleNamespace, serve: Any, openai_app: Any) -> None:
    reply = json.dumps({"subquestions": ["Who wrote The Silent Harbour?", "When was that writer born?"],
                        "rewrites": ["birth year of the author of The Silent Harbour", "Silent Harbour writer born",
                                     "The Silent Harbour novelist birth"], "bridges": ["Mara Ellison"]})
    llm = LLMTransformer(ChatClient(serve(openai_app(reply)) + "/v1", "tiny", max_retries=0), timeout_s=2.0)
    with Retriever(world.settings, world.stores, world.embedder, world.extractor, transformer=llm) as r:
        res = r.retrieve("When was the author of The Silent Harbour born?", branches=["hop"])
    assert res.transform.bridges == ["Mara Ellison"]
    [second] = [rl for rl in res.lists if rl.kind == "hop"]
    assert second.query.endswith("Mara Ellison welsh gower")  # the LLM's bridge first, then the index's
    assert res.hits[0].doc_id == world.ids["Mara Ellison"]
