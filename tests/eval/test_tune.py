"""The tuning logic on hand-made branch lists: split, grid, re-fusion, selection, and fanrag.toml writing."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fanrag.eval.tune import (
    FusionParams,
    build_grid,
    dumps_toml,
    fuse_documents,
    search,
    split_queries,
    write_retrieval_settings,
)
from fanrag.ids import chunk_id
from fanrag.settings import DEFAULT_WEIGHTS, Settings


def cid(doc: str, pos: int = 0) -> str:
    return chunk_id(doc, pos, f"{doc}{pos}")


def test_split_is_deterministic_disjoint_and_order_free() -> None:
    qids = [str(i) for i in range(11)]
    a = split_queries(qids, 0)
    assert a == split_queries(list(reversed(qids)), 0)
    assert set(a[0]).isdisjoint(a[1]) and sorted(a[0] + a[1]) == sorted(qids)
    assert len(a[0]) == 5 and len(a[1]) == 6
    assert split_queries(qids, 1) != a


def scored(ids: list[str]) -> list[tuple[str, float]]:
    return [(c, 1.0 / (i + 1)) for i, c in enumerate(ids)]


def test_grid_starts_with_the_current_settings_and_has_no_duplicates() -> None:
    default = FusionParams.of(60, 100, {}, "rrf")
    grid = build_grid(default, rrf_ks=(10, 60), weight_pairs=((1.0, 1.0), (1.0, 0.5)), graph_weights=(1.0, 0.0),
                      depths=(50, 100))
    assert grid[0] == default
    assert len(grid) == len(set(grid)) == 1 + 2 * 2 * 2 * 2
    # the PRF list follows the bm25 weight
    assert FusionParams.of(60, 100, {"dense": 1.0, "bm25": 0.5, "prf": 0.5, "graph": 0.0}, "rrf") in grid
    # score fusion has no k: its grid does not multiply by the rrf_ks
    score_grid = build_grid(FusionParams.of(60, 100, {}, "score"), rrf_ks=(10, 60), weight_pairs=((1.0, 1.0),),
                            graph_weights=(1.0,), depths=(100,))
    assert {p.rrf_k for p in score_grid} == {60} and len(score_grid) == 2


def test_fuse_documents_cuts_lists_to_depth_and_dedupes_documents() -> None:
    lists = [("dense", scored([cid("dA"), cid("dB"), cid("dC", 0), cid("dC", 1)])),
             ("bm25", scored([cid("dC"), cid("dD")]))]
    deep = FusionParams.of(60, 100, {}, "rrf")
    assert fuse_documents(lists, deep) == ["dC", "dA", "dB", "dD"]
    shallow = FusionParams.of(60, 1, {}, "rrf")  # each list cut to its first id
    assert fuse_documents(lists, shallow) == ["dA", "dC"]
    bm25_only = FusionParams.of(60, 100, {"dense": 0.0}, "rrf")
    assert fuse_documents(lists, bm25_only)[:2] == ["dC", "dD"]


def test_search_finds_the_weighting_that_ranks_the_relevant_document_first() -> None:
    # only bm25 finds the relevant document; dense puts another first: more bm25 weight must win
    cache = {f"q{i}": [("dense", scored([cid(f"x{i}")])), ("bm25", scored([cid(f"rel{i}"), cid(f"y{i}")]))]
             for i in range(4)}
    qrels = {f"q{i}": {f"R{i}": 1} for i in range(4)}
    external = {f"rel{i}": f"R{i}" for i in range(4)}
    grid = [FusionParams.of(60, 100, {"dense": 1.0, "bm25": 0.5}, "rrf"),
            FusionParams.of(60, 100, {"dense": 0.5, "bm25": 1.0}, "rrf")]
    ranked = search(grid, cache, qrels, external, list(cache))
    assert ranked[0][0] == grid[1] and ranked[0][1] == 1.0 and ranked[1][1] < 1.0


def test_write_retrieval_settings_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text(
        '[embed]\nbatch_size = 16\n\n[retrieval]\ntop_n = 3\nweights = {graph = 0.5}\n'
        '[server]\nhost = "0.0.0.0"\n')
    write_retrieval_settings(tmp_path, FusionParams.of(20, 200, {"dense": 1.0, "bm25": 0.75}))
    data = tomllib.loads((tmp_path / "fanrag.toml").read_text())
    assert data["embed"] == {"batch_size": 16} and data["server"] == {"host": "0.0.0.0"}
    assert data["retrieval"] == {"top_n": 3, "rrf_k": 20, "branch_k": 200,
                                 "weights": {"graph": 0.5, "dense": 1.0, "bm25": 0.75}}
    s = Settings.load(home=tmp_path, env={})
    assert (s.retrieval.rrf_k, s.retrieval.branch_k, s.retrieval.top_n) == (20, 200, 3)
    assert s.retrieval.weights == {**DEFAULT_WEIGHTS, "graph": 0.5, "dense": 1.0, "bm25": 0.75}


def test_write_retrieval_settings_creates_the_file(tmp_path: Path) -> None:
    write_retrieval_settings(tmp_path / "home", FusionParams.of(40, 50, {"dense": 0.5, "bm25": 1.0}))
    assert Settings.load(home=tmp_path / "home", env={}).retrieval.rrf_k == 40


_scalar = st.one_of(st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
_key = st.text(min_size=1, max_size=12)


@given(st.dictionaries(_key, st.dictionaries(_key, st.one_of(_scalar, st.lists(st.text(max_size=8), max_size=4),
                                                                 st.dictionaries(_key, st.floats(allow_nan=False,
                                                                                                 allow_infinity=False),
                                                                                 max_size=3)),
                                             max_size=5), max_size=4))
def test_dumps_toml_round_trips(data: dict) -> None:
    assert tomllib.loads(dumps_toml(data)) == data
