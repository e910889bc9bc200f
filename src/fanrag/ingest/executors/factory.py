"""``create_executor(settings, embedder)``: the executor ``pipeline.executor`` names, imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...registry import Registry
from .base import Executor

if TYPE_CHECKING:
    from ...embed.base import Embedder
    from ...settings import Settings

# Executor kinds by the part of ``pipeline.executor`` before the first ":"; each class is built by
# ``from_settings(settings, embedder, address)``.
EXECUTORS: Registry[type] = Registry("pipeline.executor", "executor")
EXECUTORS.add("local", "fanrag.ingest.executors.local:LocalExecutor")
EXECUTORS.add("ray", "fanrag.ingest.executors.ray:RayExecutor", extra="ray")
_FORMS = "local, ray (RAY_ADDRESS or a local Ray), ray:ADDRESS, ray://HOST:PORT (Ray Client)"


def parse_executor(name: str) -> tuple[str, str]:
    """``"ray://head:10001"`` -> ("ray", "ray://head:10001"); ``"ray:10.0.0.5:6379"`` -> ("ray", "10.0.0.5:6379");
    ``"local"`` -> ("local", ""). A ``scheme://`` address stays whole: the backend needs its scheme."""
    kind, sep, rest = name.strip().partition(":")
    if not sep:
        return kind, ""
    return kind, name.strip() if rest.startswith("//") else rest


def create_executor(settings: Settings, embedder: Embedder) -> Executor:
    """The executor ``settings.pipeline.executor`` names; optional ones are imported only when asked for."""
    from ...errors import ConfigError

    kind, address = parse_executor(settings.pipeline.executor)
    if kind not in EXECUTORS:
        raise ConfigError("pipeline.executor", f"unknown executor {settings.pipeline.executor!r}; available: {_FORMS}")
    return EXECUTORS.load(kind).from_settings(settings, embedder, address)  # type: ignore[attr-defined]
