from __future__ import annotations

from pathlib import Path

import pytest

from fanrag.errors import ConfigError
from fanrag.settings import Settings


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
