from __future__ import annotations

import sys

import pytest

from fanrag.embed import BACKENDS, create_embedder
from fanrag.errors import ConfigError, MissingExtraError
from fanrag.settings import EmbedSettings


def test_every_backend_setting_has_a_factory_entry() -> None:
    assert set(BACKENDS) == {"onnx", "sentence-transformers", "http"}


def test_unknown_backend_names_the_field() -> None:
    settings = EmbedSettings()
    object.__setattr__(settings, "backend", "word2vec")  # bypass validation, as a plugin config might
    with pytest.raises(ConfigError, match="embed.backend"):
        create_embedder(settings)


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"fanrag\[st\]"):
        create_embedder(EmbedSettings(backend="sentence-transformers"))
