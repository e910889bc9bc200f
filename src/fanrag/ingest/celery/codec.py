"""The task messages' serializer: JSON that keeps fanrag's dataclasses, tuples, paths and numpy arrays.

Pickle would carry them as they are, but a worker that accepts pickle runs whatever code a message names:
anyone who can write to the broker could run code on every worker (Celery refuses to start such a worker
as root). This codec only ever builds plain JSON values, tuples, ``Path``s, float arrays and dataclasses
defined in ``fanrag`` itself, through their constructors. Vectors travel as base64 of their raw bytes;
other values (loader metadata such as dates) as ``str()``, as the metadata store keeps them.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
from datetime import datetime
from pathlib import PurePath
from typing import Any
from uuid import UUID

import numpy as np

NAME = "fanrag-json"
CONTENT_TYPE = "application/x-fanrag+json"

_DC, _TUPLE, _ND, _PATH, _TIME = "__dc__", "__tuple__", "__nd__", "__path__", "__datetime__"


def dumps(obj: Any) -> str:
    return json.dumps(_encode(obj), separators=(",", ":"))


def loads(data: str | bytes) -> Any:
    return json.loads(data, object_hook=_decode)


def register() -> None:
    """Make the codec known to kombu (idempotent)."""
    from kombu.serialization import register as kombu_register

    kombu_register(NAME, dumps, loads, content_type=CONTENT_TYPE, content_encoding="utf-8")


def _encode(obj: Any) -> Any:
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, dict):  # Celery's signatures are dicts too
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v) for v in obj]}
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {_ND: [arr.dtype.str, list(arr.shape), base64.b64encode(arr.tobytes()).decode("ascii")]}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return {_PATH: str(obj)}
    if isinstance(obj, datetime):  # Celery's own options (an eta)
        return {_TIME: obj.isoformat()}
    if isinstance(obj, UUID):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not cls.__module__.startswith("fanrag."):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}: only fanrag's dataclasses travel in tasks")
        fields = {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return {_DC: f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    # Anything else can only be loader metadata (a date, a set): the metadata store keeps it as str() too.
    return str(obj)


def _decode(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        if _TUPLE in d:
            return tuple(d[_TUPLE])
        if _PATH in d:
            from pathlib import Path

            return Path(d[_PATH])
        if _TIME in d:
            return datetime.fromisoformat(d[_TIME])
        if _ND in d:
            dtype, shape, data = d[_ND]
            if np.dtype(dtype).kind not in "fiub":
                raise ValueError(f"array dtype {dtype!r} is not allowed in a task message")
            return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
    if _DC in d and len(d) == 2:
        return _dataclass(d[_DC])(**d["fields"])
    return d


def _dataclass(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith("fanrag.") or "." in qualname:
        raise ValueError(f"{name!r} is not a fanrag dataclass")
    cls = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{name!r} is not a fanrag dataclass")
    return cls
