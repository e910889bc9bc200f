from __future__ import annotations

import dataclasses
import inspect
import io
import os
import pickle
import re
import textwrap
import tokenize
from pathlib import Path

import pytest

from fanrag.errors import ConfigError
from fanrag.ingest.celery import codec
from fanrag.settings import DEFAULT_WEIGHTS, ChunkSettings, EmbedSettings, Settings, available_cpus
from fanrag.types import BranchName


def test_layers_defaults_file_env_overrides(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text("[chunk]\nsize = 200\noverlap = 20\n[retrieval]\nrrf_k = 30\n")
    s = Settings.load(home=tmp_path, env={"FANRAG_CHUNK__OVERLAP": "10", "FANRAG_VECTORS": "pgvector://x"},
                      overrides={"retrieval": {"top_n": 3}})
    assert (s.chunk.size, s.chunk.overlap) == (200, 10)
    assert (s.retrieval.rrf_k, s.retrieval.top_n) == (30, 3)
    assert s.stores.vectors == "pgvector://x"
    assert s.home == tmp_path


@pytest.mark.parametrize(("env", "field"), [
    ({"FANRAG_CHUNK__OVERLAP": "500"}, "chunk.overlap"),
    ({"FANRAG_CHUNK__SIZE": "big"}, "chunk.size"),
    ({"FANRAG_RETRIEVAL__BRANCHES": "dense,telepathy"}, "retrieval.branches"),
    ({"FANRAG_RETRIEVAL__WEIGHTS": "dense=-1"}, "retrieval.weights.dense"),
    ({"FANRAG_EMBED__BACKEND": "http"}, "embed.url"),
    ({"FANRAG_CHUNK__COLOUR": "red"}, "chunk.colour"),
    ({"FANRAG_NOSUCH__X": "1"}, "nosuch"),
])
def test_invalid_values_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env=env)
    assert info.value.field == field
    assert field in str(info.value)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text("[chunk\n")
    with pytest.raises(ConfigError, match="fanrag.toml"):
        Settings.load(home=tmp_path, env={})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.chunk.size = 1  # type: ignore[misc]
    assert s.replace(chunk={"size": 128}).chunk.size == 128 and s.chunk.size == 256


# -- every source names the dotted field --------------------------------------------------------------

@pytest.mark.parametrize(("section", "values", "field"), [
    ("chunk", {"size": 100, "overlap": 50}, "chunk.overlap"),  # overlap < size/2 spans two fields
    ("retrieval", {"candidates": 4, "top_n": 5}, "retrieval.top_n"),
    ("retrieval", {"weights": {"graph": -0.5}}, "retrieval.weights.graph"),
    ("rerank", {"backend": "tei"}, "rerank.url"),  # a URL is required for the HTTP backends
    ("llm", {"backend": "llama-cpp"}, "llm.gguf"),
    ("hnsw", {"m": 32, "ef_construction": 16}, "hnsw.ef_construction"),
    ("embed", {"transport": "grpc"}, "embed.transport"),
])
def test_every_source_names_the_field(tmp_path: Path, section: str, values: dict, field: str) -> None:
    toml = "\n".join(f"{k} = {_toml_value(v)}" for k, v in values.items())
    (tmp_path / "fanrag.toml").write_text(f"[{section}]\n{toml}\n")
    env = {f"FANRAG_{section.upper()}__{k.upper()}": _env_value(v) for k, v in values.items()}
    attempts = {
        "toml": lambda: Settings.load(home=tmp_path, env={}),
        "env": lambda: Settings.load(home=tmp_path / "none", env=env),
        "overrides": lambda: Settings.load(home=tmp_path / "none", env={}, overrides={section: values}),
        "replace": lambda: Settings().replace(**{section: values}),
    }
    for source, attempt in attempts.items():
        with pytest.raises(ConfigError) as info:
            attempt()
        assert info.value.field == field, source


def _toml_value(v: object) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {w}" for k, w in v.items()) + "}"
    return f'"{v}"' if isinstance(v, str) else str(v)


def _env_value(v: object) -> str:
    return ",".join(f"{k}={w}" for k, w in v.items()) if isinstance(v, dict) else str(v)


def test_a_section_built_directly_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        ChunkSettings(size=128, min_size=128)
    assert info.value.field == "chunk.min_size"
    with pytest.raises(ConfigError, match="embed.threads"):
        dataclasses.replace(EmbedSettings(), threads=-1)  # as the Ray executor copies a section


def test_negative_token_rate_limit_is_reported_as_itself() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"FANRAG_EMBED__RATE_LIMIT_TPM": "-1"})
    assert info.value.field == "embed.rate_limit_tpm"  # it was embed.rate_limit_rpm, a setting that was fine
    with pytest.raises(ConfigError) as info:
        EmbedSettings(rate_limit_tpm=-1)
    assert info.value.field == "embed.rate_limit_tpm"


def test_bad_toml_values_and_unknown_sections(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text("[nosuch]\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(home=tmp_path, env={})
    assert info.value.field == "nosuch" and "known: chunk" in info.value.reason
    (tmp_path / "fanrag.toml").write_text("home = 'elsewhere'\n")  # the file cannot move its own home
    with pytest.raises(ConfigError, match="unknown section"):
        Settings.load(home=tmp_path, env={})
    (tmp_path / "fanrag.toml").write_text("[chunk]\ncolour = 'red'\n")
    with pytest.raises(ConfigError, match="known: size, overlap, min_size"):
        Settings.load(home=tmp_path, env={})


# -- layering ------------------------------------------------------------------------------------------

def test_layers_merge_field_by_field(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text("[retrieval]\nweights = {dense = 0.5}\nbranches = ['dense', 'bm25']\n")
    s = Settings.load(home=tmp_path, env={"FANRAG_RETRIEVAL__WEIGHTS__BM25": "2", "FANRAG_RETRIEVAL__TOP_N": "4"})
    assert s.retrieval.weights == {**DEFAULT_WEIGHTS, "dense": 0.5, "bm25": 2.0}  # DEFAULT_WEIGHTS merged under
    assert s.retrieval.branches == ("dense", "bm25") and s.retrieval.top_n == 4
    s = Settings.load(home=tmp_path, env={"FANRAG_RETRIEVAL__WEIGHTS": "graph=1", "FANRAG_RETRIEVAL__BRANCHES": "bm25"})
    assert s.retrieval.weights == {**DEFAULT_WEIGHTS, "graph": 1.0} and s.retrieval.branches == (BranchName.BM25,)


def test_home_from_environment_and_store_url_aliases(tmp_path: Path) -> None:
    (tmp_path / "fanrag.toml").write_text("[chunk]\nsize = 100\n")
    env = {"FANRAG_HOME": str(tmp_path), "FANRAG_META": "postgresql://db/a", "FANRAG_KEYWORDS": "postgresql://db/k",
           "FANRAG_STORES__META": "postgresql://db/b", "FANRAG_TOKEN": "not a setting", "FANRAG_QUEUE": "redis://q"}
    s = Settings.load(env=env)
    assert s.home == tmp_path and s.chunk.size == 100
    assert (s.stores.meta, s.stores.keywords) == ("postgresql://db/b", "postgresql://db/k")  # the full name wins
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"FANRAG_CHUNK": "size=100"})  # a section is not one variable
    assert info.value.field == "chunk"


def test_options_compare_equal_to_their_names() -> None:
    s = Settings()
    assert s.retrieval.branches == ("dense", "bm25", "subqueries", "graph", "hop") == tuple(BranchName)
    assert "graph" in s.retrieval.branches and s.retrieval.transform == "rules" and s.embed.backend == "onnx"
    assert s.stores.entity_extractor == "rules" and s.rerank.backend == "none" and s.llm.backend == "extractive"


def test_settings_travel_as_dataclasses() -> None:
    s = Settings(home=Path("/idx")).replace(chunk={"size": 128}, retrieval={"branches": ["dense"]})
    assert pickle.loads(pickle.dumps(s)) == s
    assert codec.loads(codec.dumps(s)) == s  # Celery tasks carry the submitter's settings
    assert dataclasses.asdict(s)["chunk"] == {"size": 128, "overlap": 32, "min_size": 16, "header_tokens": 32}
    assert hash(s.embed) == hash(EmbedSettings())  # a cache key of the Celery worker


# -- CPUs ----------------------------------------------------------------------------------------------

def _cgroup(tmp_path: Path, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for folder, cpu_max in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/pod/job\n")
    return root, proc


def test_cores_are_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    root, proc = _cgroup(tmp_path, {"pod": "max 100000", "pod/job": "250000 100000"})
    assert available_cpus(root, proc) == 3  # 2.5 CPUs of quota, rounded up
    root, proc = _cgroup(tmp_path, {"pod": "100000 100000"})  # a parent's quota binds too
    assert available_cpus(root, proc) == 1
    root, proc = _cgroup(tmp_path / "none", {"pod/job": "max 100000"})
    assert available_cpus(root, proc) == 8
    assert available_cpus(tmp_path / "missing", tmp_path / "missing") == 8  # no cgroup v2: affinity alone
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)  # taskset -c 3
    assert Settings().cores == 1
    assert available_cpus(*_cgroup(tmp_path / "wide", {"pod/job": "1600000 100000"})) == 1


# -- documentation -------------------------------------------------------------------------------------

def test_comments_name_only_settings_that_exist() -> None:
    known = {f.name for section in _sections() for f in dataclasses.fields(section)}
    for section in _sections():
        source = textwrap.dedent(inspect.getsource(section))
        comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                    if t.type == tokenize.COMMENT]
        text = re.sub(r"``.*?``", "", " ".join(comments))  # code spans (URL parameters) are not settings
        named = set(re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", text))
        assert named <= known, f"{section.__name__}: {sorted(named - known)}"


def _sections() -> list[type]:
    return [type(getattr(Settings(), f.name)) for f in dataclasses.fields(Settings) if f.name != "home"]
