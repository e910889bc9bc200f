from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fanrag.retrieve.order import lost_in_the_middle


def test_best_first_and_last_worst_in_the_middle() -> None:
    assert lost_in_the_middle([1, 2, 3, 4, 5, 6, 7]) == [1, 3, 5, 7, 6, 4, 2]
    assert lost_in_the_middle([1, 2, 3, 4]) == [1, 3, 4, 2]
    assert lost_in_the_middle([1]) == [1]
    assert lost_in_the_middle([]) == []


@given(st.lists(st.integers(), min_size=2, unique=True))
def test_permutation_with_top_two_at_the_ends(items: list[int]) -> None:
    out = lost_in_the_middle(items)
    assert sorted(out) == sorted(items)
    assert out[0] == items[0] and out[-1] == items[1]
    # ranks rise towards the middle from both ends
    pos = [items.index(x) for x in out]
    peak = pos.index(max(pos))
    assert pos[: peak + 1] == sorted(pos[: peak + 1]) and pos[peak:] == sorted(pos[peak:], reverse=True)
