"""The retriever over the real embedded stores and the default embedder, on an index built by the
ingestion pipeline."""

from __future__ import annotations

from typing import Any

from fanrag.engine import Engine


def test_answers_from_a_real_index(real_home: Any) -> None:
    with Engine.open(real_home.home, mode="read") as r:
        res = r.query("What does volcanic ash from Mount Etna disrupt?")
        assert res.hits[0].source == str(real_home.docs / "volcano.md")
        assert "Volcanic ash from Mount Etna can disrupt air travel across Europe. [1]" in res.answer
        assert res.citations[0].source == str(real_home.docs / "volcano.md")
        statuses = {n: t.status for n, t in res.retrieval.branches.items()}
        hop = statuses.pop("hop")
        assert statuses == {"dense": "ok", "bm25": "ok", "graph": "ok",
                            "subqueries": "skipped: no sub-questions or rewrites"}
        assert hop.startswith("skipped: first hop")  # the question's words are all in the first hop's top chunk


def test_uncommitted_chunk_in_the_indexes_is_not_returned(real_home: Any) -> None:
    with Engine.open(real_home.home, mode="read") as r:
        res = r.retrieve("Mount Etna volcanic ash air travel disruption Europe")
        assert real_home.ghost in res.per_branch()["bm25"][:2]  # the indexes hold it...
        assert real_home.ghost not in {h.chunk_id for h in res.hits}  # ...the metadata store does not
        assert len(res.hits) == 4


def test_subqueries_are_embedded_in_one_batch_over_every_shard(real_home: Any) -> None:
    with Engine.open(real_home.home, mode="read") as r:
        res = r.retrieve("What is the difference between aspirin and insulin?")
        subs = [rl for rl in res.lists if rl.branch == "subqueries"]
        assert [rl.query for rl in subs] == ["aspirin", "insulin"]
        docs = {h.doc_id: h.source for h in res.hits}
        top_sub = [docs.get(rl.hits[0].chunk_id.rsplit("-", 2)[0], "") for rl in subs]
        assert top_sub[0].endswith("aspirin.txt") and top_sub[1].endswith("insulin.txt")
