"""The HTTP embedder against a real OpenAI-style server on loopback that fails on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fanrag.embed import Embedder, create_embedder, load_tokenizer
from fanrag.embed.http import HttpEmbedder, endpoint_url
from fanrag.errors import EmbeddingError
from fanrag.limits.backoff import RetryPolicy
from fanrag.settings import EmbedSettings
from tests.jsonhttp import JsonHandler

FAST = RetryPolicy(max_retries=3, base_s=0.01, cap_s=0.05)


def raw_vector(text: str) -> list[float]:
    """What the fake server returns: unnormalised features of the text, so order mistakes show."""
    return [float(len(text)), float(sum(c in "aeiou" for c in text)), float(ord(text[0]) if text else 1), 2.0]


@dataclass
class Script:
    """Responses to play before answering normally: (status, headers)."""

    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            script.requests.append({"path": self.path, **body})
            script.auth.append(self.headers.get("authorization"))
            script.times.append(time.monotonic())
            if script.failures:
                status, headers = script.failures.pop(0)
                self._send(status, {"error": {"message": "scripted failure"}}, headers)
                return
            # Answer in reverse order: the client must use "index", not position.
            data = [{"object": "embedding", "index": i, "embedding": raw_vector(t)}
                    for i, t in enumerate(body["input"])][::-1]
            self._send(200, {"object": "list", "data": data, "model": body["model"]})

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    httpd.shutdown()
    httpd.server_close()


def _expected(texts: list[str]) -> np.ndarray:
    rows = np.array([raw_vector(t) for t in texts], np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


TEXTS = ["alpha", "a much longer text about proteins", "zz", "medium length text", "i", "queue"]


def _embedder(url: str, **kw: object) -> HttpEmbedder:
    return HttpEmbedder(EmbedSettings(backend="http", url=url, model="fake-embed", batch_size=2, **kw),
                        policy=FAST)


def test_retries_429_with_retry_after_then_500(server: tuple[str, Script]) -> None:
    url, script = server
    script.failures = [(429, {"Retry-After": "1"}), (500, {})]
    embedder = _embedder(url)
    out = embedder.embed(TEXTS)
    np.testing.assert_allclose(out, _expected(TEXTS), rtol=1e-6)
    assert embedder.retries == 2
    assert script.times[1] - script.times[0] >= 0.95  # waited the server's Retry-After, not the 10 ms backoff
    assert len(script.requests) == 2 + 3  # two failures, then ceil(6 / 2) batches
    assert all(len(r["input"]) <= 2 for r in script.requests)
    assert {r["path"] for r in script.requests} == {"/v1/embeddings"}


def test_dim_is_learned_from_the_first_response(server: tuple[str, Script]) -> None:
    url, script = server
    embedder = _embedder(url)
    assert embedder.dim == 4
    assert len(script.requests) == 1
    embedder.embed(["x"])
    assert embedder.dim == 4 and len(script.requests) == 2


def test_client_errors_are_not_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.failures = [(400, {})]
    with pytest.raises(EmbeddingError, match="HTTP 400"):
        _embedder(url).embed(["x"])
    assert len(script.requests) == 1


def test_gives_up_after_max_retries(server: tuple[str, Script]) -> None:
    url, script = server
    script.failures = [(503, {})] * 10
    with pytest.raises(EmbeddingError, match="gave up after 4 attempts"):
        _embedder(url).embed(["x"])
    assert len(script.requests) == 4


def test_connection_errors_are_retried_then_reported() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedder = _embedder(f"http://127.0.0.1:{port}")
    with pytest.raises(EmbeddingError, match="ConnectError"):
        embedder.embed(["x"])
    assert embedder.retries == 3


def test_api_key_comes_from_the_named_variable(server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.setenv("MY_EMBED_KEY", "sekrit")
    _embedder(url, api_key_env="MY_EMBED_KEY").embed(["x"])
    monkeypatch.delenv("MY_EMBED_KEY")
    _embedder(url, api_key_env="MY_EMBED_KEY").embed(["x"])
    assert script.auth == ["Bearer sekrit", None]


def test_malformed_response_is_an_embedding_error(server: tuple[str, Script]) -> None:
    url, script = server
    script.failures = [(200, {})]  # 200 with an error body: no "data"
    with pytest.raises(EmbeddingError, match="not an OpenAI embeddings list"):
        _embedder(url).embed(["x"])


def test_factory_and_tokenizer_spec(server: tuple[str, Script]) -> None:
    url, _ = server
    embedder = create_embedder(EmbedSettings(backend="http", url=url, model="m", max_length=512))
    assert isinstance(embedder, HttpEmbedder) and isinstance(embedder, Embedder) and embedder.name == "http/m"
    spec = embedder.tokenizer_spec()
    assert spec.kind == "approx" and spec.max_tokens == 510
    assert load_tokenizer(spec).count("Hello, world!") == 4
    np.testing.assert_allclose(embedder.embed_query("hello"), _expected(["hello"])[0], rtol=1e-6)
    embedder.close()


@pytest.mark.parametrize(("base", "url"), [
    ("http://h:1/v1", "http://h:1/v1/embeddings"),
    ("http://h:1/v1/", "http://h:1/v1/embeddings"),
    ("http://h:1", "http://h:1/v1/embeddings"),
    ("https://api.example.com/v1/embeddings", "https://api.example.com/v1/embeddings"),
])
def test_endpoint_url(base: str, url: str) -> None:
    assert endpoint_url(base) == url
