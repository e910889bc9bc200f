"""Where the pipeline's work runs: ``local`` (a process pool and a thread) or ``ray`` (tasks and an actor pool)."""

from .base import Executor, WorkerCrashed
from .factory import EXECUTORS, create_executor, parse_executor

__all__ = ["EXECUTORS", "Executor", "WorkerCrashed", "create_executor", "parse_executor"]
