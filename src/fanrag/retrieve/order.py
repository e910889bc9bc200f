"""Lost-in-the-middle ordering (Liu et al., 2023): language models use the start and the end of a long
context best, so the most relevant sources go first and last and the weakest sit in the middle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def lost_in_the_middle(items: Sequence[T]) -> list[T]:
    """Reorder items given best first: ranks 1, 3, 5, ... then ..., 6, 4, 2.

    The best item opens the context and the second best closes it; the worst lands in the middle.
    """
    front = list(items[0::2])
    back = list(items[1::2])
    return front + back[::-1]
