"""What travels between the submitter and the tasks, and along a source's chain. The submitter imports
this module, never ``tasks`` (whose import registers the tasks and the worker's signal handlers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...settings import Settings
from ..sources import SourceFile, SourcePlan
from ..work import PartResult

KEY_TTL_S = 86400  # delivery counters (of crashed tasks) and the finalise counter


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One ingestion run as each of its tasks sees it: its id, the submitter's settings, its options."""

    run_id: str
    settings: Settings
    prune: bool = False


@dataclass(slots=True)
class DocWork:
    """What travels along one source's chain: the file's name (never its bytes), then its plan, its
    chunks and their vectors. ``plan`` is a one-line error once a step failed, None when the source
    was unchanged by size and mtime."""

    run: RunInfo
    src: SourceFile
    plan: SourcePlan | str | None = None
    unchanged: bool = False
    known: dict[str, str] = field(default_factory=dict)  # JSONL: doc_id -> committed hash (skip unchanged)
    results: list[PartResult] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # one array per result, rows in chunk order
    plan_s: float = 0.0
    embed_s: float = 0.0

    @property
    def done(self) -> bool:
        """Nothing left to compute: failed, or unchanged."""
        return isinstance(self.plan, str) or self.unchanged

    def fail(self, reason: str) -> DocWork:
        path = self.src.path
        self.plan = reason if reason.startswith(path) else f"{path}: {reason}"
        self.results, self.vectors = [], []
        return self


def finalised_key(run_id: str) -> str:
    """Counts how often a run's chord callback ran (once, unless its worker died inside it)."""
    return f"fanrag:celery:{run_id}:finalised"
