from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanrag.embed.batching import aembed, embed_sorted, l2_normalise


def _features(text: str) -> np.ndarray:
    """A deterministic per-text vector: length, vowel count, first code point."""
    return np.array([len(text), sum(c in "aeiou" for c in text), ord(text[0]) if text else 0], np.float32)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([_features(t) for t in texts])


@given(st.lists(st.text(max_size=40), max_size=60), st.integers(1, 17))
@settings(max_examples=60, deadline=None)
def test_rows_come_back_in_input_order(texts: list[str], batch_size: int) -> None:
    rec = Recorder()
    out = embed_sorted(rec, texts, batch_size, dim=3)
    expected = np.stack([_features(t) for t in texts]) if texts else np.zeros((0, 3), np.float32)
    np.testing.assert_array_equal(out, expected)
    assert all(len(b) <= batch_size for b in rec.batches)
    assert sum(len(b) for b in rec.batches) == len(texts)


def test_batches_are_length_sorted() -> None:
    texts = ["a" * n for n in (9, 1, 7, 3, 5, 2, 8)]
    rec = Recorder()
    embed_sorted(rec, texts, 3)
    assert [[len(t) for t in b] for b in rec.batches] == [[1, 2, 3], [5, 7, 8], [9]]


def test_explicit_lengths_override_character_length() -> None:
    texts = ["long text here", "x", "medium"]
    rec = Recorder()
    out = embed_sorted(rec, texts, 1, lengths=[1, 3, 2])
    assert [b[0] for b in rec.batches] == ["long text here", "medium", "x"]
    np.testing.assert_array_equal(out[1], _features("x"))


def test_equal_lengths_keep_input_order_in_batches() -> None:
    rec = Recorder()
    embed_sorted(rec, ["b", "a", "c"], 2)
    assert rec.batches == [["b", "a"], ["c"]]


def test_empty_input_makes_no_call() -> None:
    rec = Recorder()
    assert embed_sorted(rec, [], 4, dim=7).shape == (0, 7)
    assert rec.batches == []


def test_wrong_row_count_from_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        embed_sorted(lambda texts: np.zeros((1, 3), np.float32), ["a", "b"], 2)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        embed_sorted(Recorder(), ["a"], 0)


def test_l2_normalise_leaves_zero_rows_alone() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


async def _run_aembed() -> np.ndarray:
    return await aembed(lambda texts: np.stack([_features(t) for t in texts]), ["ab", "c"])


def test_aembed_runs_the_blocking_call_in_a_thread() -> None:
    import asyncio

    np.testing.assert_array_equal(asyncio.run(_run_aembed())[1], _features("c"))
