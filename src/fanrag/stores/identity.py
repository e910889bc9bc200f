"""What a vector index was built with, and the check every vector backend runs when it opens one.

An index records the embedder that built it: the vector dimension and the embedder's name, which names
the runtime and precision, then the model (``onnx-int8/all-MiniLM-L6-v2``). Opening it with another
model, to read or to write, is a StoreError naming both: another dimension cannot be searched at all,
and another model of the same dimension puts queries in another vector space, so dense search would
quietly return noise. The same model in another runtime or precision (int8 or fp32 ONNX,
sentence-transformers) is accepted: its vectors agree to a cosine of 0.99+, well inside what retrieval
tolerates, and switching runtimes must not force a re-ingest.

A caller that does not know the embedder passes ``dim=None`` and/or ``model=""`` (a tool that only
counts, a worker reading the metadata store): that part is not checked. An index built before models
were recorded (model ``""``) accepts the first writer's model, and the backend records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StoreError


@dataclass(frozen=True, slots=True)
class BuiltWith:
    """The embedder an index was built with, as the index records it."""

    dim: int
    model: str = ""  # "" = not recorded (an index older than the record)

    def __str__(self) -> str:
        return f"{self.model or 'an unrecorded model'} ({self.dim}-d)"


def _configured(dim: int | None, model: str) -> str:
    size = f"{dim}-d" if dim is not None else "dimension unknown"
    return f"{model} ({size})" if model else f"an unnamed embedder ({size})"


def check_embedder(where: str, built: BuiltWith, dim: int | None, model: str, remedy: str) -> None:
    """Refuse an embedder whose dimension or model differs from what built the index at ``where``."""
    other_dim = dim is not None and int(dim) != built.dim
    other_model = bool(model and built.model) and model_of(model) != model_of(built.model)
    if other_dim or other_model:
        raise StoreError(f"{where}: index built with {built}; the configured embedder is "
                         f"{_configured(dim, model)}: it was built with another model; {remedy}")


def model_of(embedder_name: str) -> str:
    """The model an embedder name names: ``onnx-int8/all-MiniLM-L6-v2`` -> ``all-MiniLM-L6-v2``."""
    return embedder_name.split("/", 1)[-1]


def should_record(built: BuiltWith, model: str, read_only: bool) -> bool:
    """A writer that knows its model records it in an index that has none recorded yet."""
    return bool(model) and not built.model and not read_only
