"""What every benchmark shares: the machine it ran on, result files, memory sampling, tables.

Every script writes ``bench/results/<name>.json`` with an ``environment`` block (cores, load average
before and after, platform, UTC time, git commit) so a number is never read without its context; a
load average near the core count means the machine was busy and the timings are not to be trusted.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from fanrag.eval.stats import percentile

__all__ = ["RESULTS", "ROOT", "MemorySampler", "environment", "percentile", "print_table", "ratio",
           "rusage_peaks_mb", "timed", "write_result"]


def git_commit(root: Path = ROOT) -> str:
    """The checked-out commit (``+dirty`` when the tree has changes), or "" outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }


def write_result(name: str, data: Mapping[str, Any], env_before: Mapping[str, Any] | None = None,
                 results_dir: Path = RESULTS) -> Path:
    """``results_dir/<name>.json``: ``data`` plus the environment (load average before and after)."""
    env = environment()
    if env_before is not None:
        env["loadavg_before"] = env_before["loadavg"]
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"name": name, "environment": env, **data}, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when either is 0: a variant that did not run must not look like a 0x or
    infinite speed-up."""
    return a / b if a and b else None


def rusage_peaks_mb() -> dict[str, float]:
    """Peak RSS of this process and of its largest waited-for child (Linux reports KiB)."""
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024
    return {"self_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale,
            "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale}


def tree_rss_mb(pid: int | None = None) -> float:
    """Current RSS of a process plus all its descendants (worker pools included)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # exited between listing and reading
    return total / (1 << 20)


class MemorySampler:
    """Samples the RSS of this process tree in a thread; ``peak_mb`` is the highest sum seen. getrusage
    alone cannot give this: RUSAGE_CHILDREN reports the largest child, not the pool's total."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self.start_mb = tree_rss_mb()
        self.peak_mb = self.start_mb
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb())


@dataclass
class Timing:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    t = Timing()
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - t0


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def print_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                echo: Callable[[str], None] = print) -> None:
    """A plain aligned table (no dependency, readable in CI logs)."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    echo(title)
    echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    echo("  ".join("-" * w for w in widths))
    for row in cells:
        echo("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))


def run_json_subprocess(args: Sequence[str], timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``python <args>`` whose last stdout line is a JSON object; a variant in its own process gets
    its own peak RSS and nothing warmed up by another variant."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}
