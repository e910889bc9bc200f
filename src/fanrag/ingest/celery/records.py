"""Run summaries as they cross the result backend: ``IngestSummary.to_dict()`` one way, this module back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..summary import IngestSummary, StageTimes

_COUNTS = ("sources", "ok", "unchanged", "unchanged_sources", "removed", "chunks", "pages")
_STAGES = ("plan", "load_chunk", "embed", "write")


def summary_from_dict(data: dict[str, Any]) -> IngestSummary:
    """The inverse of ``IngestSummary.to_dict()``."""
    s = IngestSummary()
    for k in _COUNTS:
        setattr(s, k, int(data.get(k, 0)))
    s.failed = [(str(f["source"]), str(f["reason"])) for f in data.get("failed", [])]
    s.wall_s = float(data.get("wall_s", 0.0))
    s.missing_paths = [str(p) for p in data.get("missing_paths", [])]
    st = data.get("stages", {})
    s.stages = StageTimes(**{k: float(st.get(k, 0.0)) for k in _STAGES},
                          write_stores={k: float(v) for k, v in st.get("write_stores", {}).items()})
    return s


def merge(summaries: Iterable[IngestSummary]) -> IngestSummary:
    """One summary of many (one per document chain): counts, failures and stage seconds add up."""
    out = IngestSummary()
    for s in summaries:
        for k in _COUNTS:
            setattr(out, k, getattr(out, k) + getattr(s, k))
        out.failed.extend(s.failed)
        out.missing_paths.extend(s.missing_paths)
        for k in _STAGES:
            setattr(out.stages, k, getattr(out.stages, k) + getattr(s.stages, k))
        for name, v in s.stages.write_stores.items():
            out.stages.write_stores[name] = out.stages.write_stores.get(name, 0.0) + v
    return out
