"""Retrieval units: the places that fusion gives credit to.

A chunk id is ``{doc_id}-{position:05d}-{hash}`` (``fanrag.ids.chunk_id``). A unit is a window of
``window`` consecutive chunks of one document: a short document (up to ``window`` chunks, about a page of
text at the default chunk size) is one unit; a long one (a manual, a 10-K filing) is one unit per window,
so one lucky chunk does not lift the whole book. ``window`` 0 makes every document one unit.
"""

from __future__ import annotations


def parse_chunk_id(chunk_id: str) -> tuple[str, int]:
    """``(doc_id, position)`` of a chunk id."""
    doc, position, _ = chunk_id.rsplit("-", 2)
    return doc, int(position)


def unit_of(chunk_id: str, window: int) -> str:
    doc, position = parse_chunk_id(chunk_id)
    return doc if window <= 0 else f"{doc}#{position // window}"
