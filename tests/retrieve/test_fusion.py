from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanrag.retrieve.fusion import rrf


def test_hand_computed_example() -> None:
    lists = [("dense", ["a", "b", "c"]), ("bm25", ["b", "d"])]
    fused = dict(rrf(lists, k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [cid for cid, _ in rrf(lists, k=60)] == ["b", "a", "d", "c"]


def test_weights_and_top() -> None:
    lists = [("dense", ["a", "b"]), ("bm25", ["b", "a"])]
    fused = rrf(lists, k=0, weights={"bm25": 3.0}, top=1)
    # a: 1/1 + 3/2 = 2.5 ; b: 1/2 + 3/1 = 3.5
    assert fused == [("b", pytest.approx(3.5))]


def test_duplicate_inside_one_list_counts_once_at_best_rank() -> None:
    assert dict(rrf([("x", ["a", "a", "b"])], k=1)) == {"a": pytest.approx(1 / 2), "b": pytest.approx(1 / 4)}


def test_ties_keep_first_appearance() -> None:
    assert [c for c, _ in rrf([("x", ["p"]), ("y", ["q"])], k=60)] == ["p", "q"]


def test_negative_k_is_refused() -> None:
    with pytest.raises(ValueError):
        rrf([("x", ["a"])], k=-1)


ranked_lists = st.lists(
    st.lists(st.sampled_from([f"c{i}" for i in range(12)]), unique=True, max_size=10), min_size=1, max_size=4)


# ranx compiles with numba on first use: no per-example deadline
@settings(deadline=None, max_examples=40)
@given(ranked_lists, st.integers(min_value=0, max_value=100))
def test_matches_ranx(lists: list[list[str]], k: int) -> None:
    from ranx import Run
    from ranx.fusion import rrf as ranx_rrf

    lists = [lst for lst in lists if lst]
    if not lists:
        return
    # ranx ranks a run by its position after sorting by score: give strictly decreasing scores
    runs = [Run({"q": {cid: float(len(lst) - i) for i, cid in enumerate(lst)}}) for lst in lists]
    expected = ranx_rrf(runs, k=k).to_dict()["q"]
    ours = dict(rrf([(f"b{i}", lst) for i, lst in enumerate(lists)], k=k))
    assert ours.keys() == expected.keys()
    for cid, score in ours.items():
        assert score == pytest.approx(expected[cid], rel=1e-9)


def test_zero_weight_leaves_a_list_out() -> None:
    assert rrf([("dense", ["a"]), ("bm25", ["b"])], weights={"dense": 0}) == [("b", pytest.approx(1 / 61))]
