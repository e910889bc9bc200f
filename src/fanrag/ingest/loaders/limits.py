"""Bounds on what loading one source may cost: the ``ingest.*`` settings (``IngestSettings``).

Every bound is checked before the step it protects, from what the file itself declares or from a cheap
streaming pass, never by running the expensive step and watching it: a DOCX's zip directory gives each
entry's uncompressed size before anything is inflated; a PDF's Flate streams are inflated in 64 KiB steps,
counted and thrown away, before pdfium holds any of them whole; an HTML page's nesting is counted by a tag
scanner before the parser (whose time grows with the square of the depth) sees it. A source over a bound
fails alone with ``LimitExceeded``: one line naming the file, what was found and the setting to raise.

Loaders take ``limits=None`` to mean the defaults, so a caller that passes nothing is still bounded.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import LimitExceeded

if TYPE_CHECKING:
    from ...settings import IngestSettings

MIB = 1 << 20
# A ratio is only judged above this decoded size: a 40-byte stream of 4,000 spaces is no threat, and small
# inputs compress unpredictably well.
RATIO_FLOOR = 1 * MIB
_STEP = 1 << 16


def resolve(limits: IngestSettings | None) -> IngestSettings:
    """``limits``, or the defaults (importing settings only then: loaders run in worker processes)."""
    if limits is not None:
        return limits
    from ...settings import IngestSettings

    return IngestSettings()


def exceeded(path: Path | str, found: str, setting: str, value: int, unit: str = "") -> LimitExceeded:
    """``<path>: <found> (ingest.<setting> = <value><unit>)``."""
    return LimitExceeded(str(path), f"{found} (ingest.{setting} = {value:,}{unit})")


def size(n_bytes: int) -> str:
    return f"{n_bytes / MIB:,.1f} MiB" if n_bytes >= MIB else f"{n_bytes:,} bytes"


def check_ratio(path: Path | str, what: str, decoded: int, compressed: int, limits: IngestSettings) -> None:
    """Refuse ``what`` when it inflates more than ``ingest.max_ratio`` times (above ``RATIO_FLOOR``)."""
    if decoded > RATIO_FLOOR and decoded > limits.max_ratio * max(compressed, 1):
        raise exceeded(path, f"{what} inflates {decoded // max(compressed, 1):,}:1 "
                             f"({size(compressed)} to {size(decoded)}): a compression bomb?",
                       "max_ratio", limits.max_ratio, ":1")


def inflated_size(data: bytes | memoryview, cap: int) -> int | None:
    """How many bytes zlib data inflates to, stopping once past ``cap`` (then ``cap + 1`` or a little
    more is returned); None when the data is not valid zlib (encrypted, another filter, damaged).

    Memory stays at one 64 KiB step whatever the ratio: the output is counted, never kept.
    """
    inflater = zlib.decompressobj()
    view = memoryview(data)
    total = 0
    try:
        for pos in range(0, len(view), _STEP):
            pending: bytes | memoryview = view[pos:pos + _STEP]
            while pending and total <= cap:
                total += len(inflater.decompress(pending, _STEP))
                pending = inflater.unconsumed_tail
            if total > cap or inflater.eof:
                break
    except zlib.error:
        return None if total == 0 else total
    return total
