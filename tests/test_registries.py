"""Every registry of the project, every entry that needs an extra: with every optional package hidden, the
entry fails with MissingExtraError naming the extra to install (issue 10: one registry pattern)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest

from fanrag.errors import MissingExtraError
from fanrag.registry import Entry, Registry

# Each factory module that holds registries: importing it registers fanrag's own entries.
FACTORIES = ("fanrag.stores.factory", "fanrag.jobs.factory", "fanrag.graph.factory", "fanrag.retrieve.factory",
             "fanrag.ingest.executors.factory", "fanrag.ingest.loaders.factory", "fanrag.embed.factory")
# The top-level import names of what the extras install (pyproject.toml [project.optional-dependencies]).
OPTIONAL = ("fastapi", "uvicorn", "prometheus_client", "multipart", "spacy", "en_core_web_sm",
            "sentence_transformers", "torch", "ranx", "llama_cpp", "redis", "psycopg", "psycopg_pool", "boto3",
            "botocore", "falkordb", "aiokafka", "ray", "celery", "kombu", "bullmq", "mcp", "openai", "cohere")


def registries() -> list[tuple[str, Registry]]:
    found = []
    for name in FACTORIES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, Registry):
                found.append((f"{name}.{attr}", value))
            elif isinstance(value, dict) and value and all(isinstance(v, Registry) for v in value.values()):
                found += [(f"{name}.{attr}[{k}]", v) for k, v in value.items()]
    return found


def entries_with_extras() -> list[tuple[str, Registry, Entry]]:
    return [(f"{where}:{e.name}", reg, e) for where, reg in registries() for e in reg.entries()
            if e.extra and e.target.startswith("fanrag.")]


def test_every_subsystem_has_a_registry_with_entries() -> None:
    kinds = {reg.kind for _, reg in registries()}
    assert {"embedder", "executor", "job transport", "loader", "query transformer", "reranker", "answer generator",
            "entity extractor", "vectors store", "keywords store", "meta store", "blobs store",
            "graph store"} <= kinds
    assert len(entries_with_extras()) >= 10


@pytest.fixture
def without_optional_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        top = name.split(".")[0]
        if top in OPTIONAL:
            monkeypatch.delitem(sys.modules, name)
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError


def _use(registry: Registry, entry: Entry, tmp_path: Path) -> object:
    """What a user does that reaches the entry: its subsystem's own factory call."""
    from fanrag.embed.factory import create_embedder
    from fanrag.graph.factory import create_extractor
    from fanrag.ingest.executors.factory import create_executor
    from fanrag.jobs.factory import open_transport
    from fanrag.retrieve.factory import create_generator, create_reranker
    from fanrag.settings import EmbedSettings, LLMSettings, RerankSettings, Settings

    match registry.kind:
        case "job transport":
            return asyncio.run(open_transport(f"{entry.name}://127.0.0.1:1/0").stats())  # the first broker call
        case "entity extractor":
            extractor = create_extractor(entry.name)
            return extractor.extract(["Ada Lovelace met Charles Babbage in London."]) if extractor else None
        case "reranker":
            return create_reranker(RerankSettings(backend=entry.name, model=str(tmp_path)))
        case "answer generator":
            generator = create_generator(LLMSettings(backend=entry.name, gguf=str(tmp_path / "m.gguf")))
            return generator.warm_up()  # a model server or file loads on first use
        case "executor":
            settings = Settings.load(home=tmp_path, overrides={"pipeline": {"executor": entry.name}}, env={})
            return create_executor(settings, embedder=object())  # type: ignore[arg-type]
        case "embedder":
            return create_embedder(EmbedSettings(backend=entry.name))
    raise AssertionError(f"no use known for a {registry.kind}: add one here")


# Store backends and the vector buffer open from URLs: tests/stores/test_factory.py hides every package they
# import at once and checks each one, through open_backend and wrap_vector_buffer.
NOT_STORES = [(w, r, e) for w, r, e in entries_with_extras() if "fanrag.stores." not in w]


@pytest.mark.parametrize(("where", "registry", "entry"), NOT_STORES,
                         ids=lambda v: v if isinstance(v, str) else "")
def test_an_entry_without_its_extra_names_the_pip_install(where: str, registry: Registry, entry: Entry,
                                                          without_optional_packages: None, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The entry's own module must import afresh, with the packages hidden.
    for name in list(sys.modules):
        if name == entry.module or name.startswith(entry.module + "."):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError) as info:
        _use(registry, entry, tmp_path)
    assert f"fanrag[{entry.extra}]" in str(info.value), str(info.value)
