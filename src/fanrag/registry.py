"""One lazy registry pattern for every pluggable part (stores, embedders, executors, transports,
rerankers, generators, transformers, extractors, loaders).

An entry is a name and a ``"module:attr"`` target, plus the extra that installs the target's
third-party packages. Nothing is imported until an entry is asked for, so ``import fanrag`` never pulls
an optional framework, and a missing one fails with the ``pip install`` to run:

    EMBEDDERS = Registry("embed.backend", "embedder")
    EMBEDDERS.add("onnx", "fanrag.embed.onnx:OnnxEmbedder")
    EMBEDDERS.add("sentence-transformers", "fanrag.embed.st:SentenceTransformerEmbedder", extra="st")
    cls = EMBEDDERS.load(settings.embed.backend)     # ConfigError naming embed.backend if unknown

Each subsystem keeps its registry in its own ``factory.py``; third parties add entries with ``add``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError, MissingExtraError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    extra: str = ""  # the fanrag extra that installs what the target imports ("" = core)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


class Registry(Generic[T]):
    """Named, lazily imported implementations of one kind. ``field`` is the setting that names them."""

    def __init__(self, field: str, kind: str) -> None:
        self.field = field
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, *, extra: str = "") -> None:
        """Register (or replace) ``name``; ``target`` is ``"module:attr"``, imported on first use."""
        if ":" not in target:
            raise ValueError(f"registry target must be 'module:attr', not {target!r}")
        self._entries[name] = Entry(name, target, extra)

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.field, f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None

    def load(self, name: str) -> T:
        """The registered object, imported now. A missing third-party package raises MissingExtraError
        naming the extra; a bug inside fanrag's own module still raises as itself."""
        e = self.entry(name)
        try:
            module = importlib.import_module(e.module)
        except ModuleNotFoundError as exc:
            if not e.extra or (exc.name or "").split(".")[0] == "fanrag":
                raise
            raise MissingExtraError(f"the {name} {self.kind}", e.extra, exc.name) from exc
        except MissingExtraError:
            raise
        return getattr(module, e.target.partition(":")[2])

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``load(name)(*args, **kwargs)``."""
        return self.load(name)(*args, **kwargs)  # type: ignore[operator]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entries(self) -> list[Entry]:
        return list(self._entries.values())
