"""fanrag's exception tree. Every error the library raises on purpose is one of these:

    FanragError
    ├── ConfigError            a setting is invalid (names the field)
    ├── MissingExtraError      an optional backend's package is not installed (names the extra)
    ├── LoadError              a source could not be read (names the file and the reason)
    │   ├── UnsupportedFormat
    │   ├── EmptyDocument
    │   ├── EncryptedDocument
    │   ├── CorruptDocument
    │   └── LimitExceeded      over an ``ingest.*`` bound (zip bomb, lying page count, deep markup)
    ├── EmbeddingError         the embedder failed (model missing, HTTP endpoint down, ...)
    ├── StoreError             a store could not be opened, read or written
    │   └── IndexLocked        another process is writing to the same index home
    ├── QueryError             retrieval or generation failed
    └── JobError               a job transport or executor failed

Backend errors are mapped at the boundary: ``raise StoreError(...) from exc``.
"""

from __future__ import annotations


class FanragError(Exception):
    """Base class of every fanrag error."""


class ConfigError(FanragError, ValueError):
    """A setting is invalid; ``field`` names it (dotted path, e.g. ``chunk.overlap``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid setting {field}: {reason}")


class MissingExtraError(FanragError, ImportError):
    """An optional dependency is missing; the message says what to install."""

    def __init__(self, feature: str, extra: str, package: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        what = f" (package {package!r})" if package else ""
        super().__init__(f"{feature} needs an optional dependency{what}: pip install 'fanrag[{extra}]'")


class LoadError(FanragError):
    """A source could not be loaded. ``source`` is the file (or URI); ``reason`` is one line."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self):
        return (type(self), (self.source, self.reason))


class UnsupportedFormat(LoadError):
    pass


class EmptyDocument(LoadError):
    pass


class EncryptedDocument(LoadError):
    pass


class CorruptDocument(LoadError):
    pass


class LimitExceeded(LoadError):
    """The source would cost more than an ``ingest.*`` setting allows; the reason names the setting."""


class EmbeddingError(FanragError):
    pass


class StoreError(FanragError):
    pass


class IndexLocked(StoreError):
    pass


class QueryError(FanragError):
    pass


class JobError(FanragError):
    pass


def require(module: str, *, feature: str, extra: str):
    """Import an optional module or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module.split(".")[0]) from exc
