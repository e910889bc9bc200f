"""Hostile input at the HTTP boundary (issue 13): nothing escapes the ingest root, bad input is a 4xx with
a one-line reason (never a 500, never a traceback), and the read API names no absolute server path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from fanrag.settings import Settings

from .conftest import SECRET, TOKEN, free_port, serve_command


def post(server: Any, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(server.url + path, timeout=120, **kw)


def raw_json(server: Any, path: str, body: bytes, *, auth: bool = False) -> httpx.Response:
    """A JSON body sent as bytes: what httpx's json= cannot encode (a lone surrogate escape)."""
    headers = {"content-type": "application/json", **(server.auth if auth else {})}
    return post(server, path, content=body, headers=headers)


def one_line_4xx(r: httpx.Response) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else json.dumps(detail)
    assert "Traceback" not in text and "\n" not in text
    return text


def sources(server: Any) -> set[str]:
    docs = httpx.get(server.url + "/documents", params={"limit": 1000}).json()["documents"]
    return {d["source"] for d in docs}


# ---------------------------------------------------------------------------------------- the ingest root

def test_a_symlink_in_a_walked_directory_cannot_reach_outside_the_root(server: Any) -> None:
    r = post(server, "/ingest", json={"paths": ["sub"]}, headers=server.auth)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["ok"] == 1  # sub/tides.txt
    (failed,) = summary["failed"]
    assert failed["source"].endswith("sub/secret.txt") and "outside the ingest root" in failed["reason"]
    assert not any("secret" in s for s in sources(server))
    d = post(server, "/query", json={"query": "launch code of the outside file", "generate": False}).json()
    assert all(SECRET.strip() not in h["text"] for h in d["hits"])
    # named directly it was and stays a 403
    r = post(server, "/ingest", json={"paths": ["sub/secret.txt"]}, headers=server.auth)
    assert r.status_code == 403


def test_an_upload_is_confined_to_the_upload_directory(server: Any, tmp_path: Path) -> None:
    data = b"An upload whose content-hash directory was replaced by a symlink out of the home.\n"
    planted = server.home / "uploads" / hashlib.blake2b(data, digest_size=8).hexdigest()
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(tmp_path, target_is_directory=True)
    r = post(server, "/ingest", files={"files": ("planted.txt", data, "text/plain")}, headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] == 0 and "outside the ingest root" in r.json()["failed"][0]["reason"]


def test_paths_are_deduplicated_and_checked_before_the_lock(server: Any) -> None:
    from fanrag.server.files import IngestPaths, confined_paths

    settings = Settings.load(home=server.home, overrides={"server": {"ingest_root": str(server.root)}}, env={})
    source = confined_paths(IngestPaths(paths=[""] * 50 + [".", str(server.root), "sub/.."]), settings)
    assert source.paths == (server.root.resolve(),)
    r = post(server, "/ingest", json={"paths": [""] * 50}, headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["sources"] == 3  # aspirin, volcano, sub/tides: each once
    assert [f["source"].rsplit("/", 2)[-2:] for f in r.json()["failed"]] == [["sub", "secret.txt"]]


def test_the_read_api_shows_no_absolute_server_path(server: Any) -> None:
    assert post(server, "/ingest", json={"paths": ["aspirin.txt", "sub"]}, headers=server.auth).status_code == 200
    shown = sources(server)
    assert {"aspirin.txt", "sub/tides.txt"} <= shown
    assert not any(s.startswith("/") for s in shown)
    body = json.dumps(httpx.get(server.url + "/documents").json())
    assert str(server.root) not in body and str(server.home) not in body
    d = post(server, "/query", json={"query": "two tides a day", "top_n": 3}).json()
    assert d["hits"] and all(not h["source"].startswith("/") for h in d["hits"] + d["citations"])


# ---------------------------------------------------------------------------------------- no 500s

def test_a_lone_surrogate_in_a_query_is_422(server: Any) -> None:
    r = raw_json(server, "/query", b'{"query": "aspirin \\ud800"}')
    assert r.status_code == 422 and "unicode" in one_line_4xx(r)  # rendered, not a 500 on the echoed input


def test_an_offset_past_the_sql_range_is_422(server: Any) -> None:
    r = httpx.get(server.url + "/documents", params={"offset": 2**63})
    assert r.status_code == 422
    one_line_4xx(r)
    r = httpx.get(server.url + "/documents", params={"offset": 2**63 - 1})
    assert r.status_code == 200 and r.json()["documents"] == []


@pytest.mark.parametrize("path, why", [
    ("sub/a\x00b.txt", "NUL"),
    ("x" * 300, "longer than 255 bytes"),
    ("sub/" + "y" * 256 + "/z.txt", "longer than 255 bytes"),
    ("\ud800.txt", "unicode"),
])
def test_bad_names_in_ingest_paths_are_422(server: Any, path: str, why: str) -> None:
    body = json.dumps({"paths": [path]}).encode()  # ensure_ascii: the surrogate travels as \ud800
    r = raw_json(server, "/ingest", body, auth=True)
    assert r.status_code == 422 and why in one_line_4xx(r)


def test_a_name_that_is_not_utf8_cannot_be_sent_as_json(server: Any) -> None:
    """JSON is Unicode: a surrogate-escaped name is refused (its directory can be named instead)."""
    r = raw_json(server, "/ingest", json.dumps({"paths": ["odd/caf\udce9.txt"]}).encode(), auth=True)
    assert r.status_code == 422 and "unicode" in one_line_4xx(r)


def test_responses_render_what_utf8_cannot_encode() -> None:
    from fanrag.server.http import SafeJSONResponse

    body = {"source": "caf\udce9.txt", "query": "x\ud800", "score": float("nan"), "n": [1, 2.5, None]}
    assert json.loads(SafeJSONResponse(body).body) == {
        "source": "caf\\xe9.txt", "query": "x\\ud800", "score": "nan", "n": [1, 2.5, None]}
    assert json.loads(SafeJSONResponse({"text": "line\nbreak"}).body) == {"text": "line\nbreak"}


@pytest.mark.parametrize("name, why", [("n" * 300 + ".txt", "longer than 255 bytes"), ("..", "needs a file name")])
def test_bad_upload_names_are_400(server: Any, name: str, why: str) -> None:
    r = post(server, "/ingest", files={"files": (name, b"some text\n", "text/plain")}, headers=server.auth)
    assert r.status_code == 400 and why in one_line_4xx(r)


def test_identical_uploads_at_once_all_succeed(server: Any) -> None:
    data = b"Twelve identical uploads race for one file; each must see the whole of it.\n"

    def upload(_: int) -> httpx.Response:
        return post(server, "/ingest", files={"files": ("race.txt", data, "text/plain")}, headers=server.auth)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(upload, range(12)))
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses if r.status_code != 200]
    assert sum(r.json()["ok"] for r in responses) == 1
    assert sum(r.json()["unchanged"] for r in responses) == 11
    stored = list((server.home / "uploads").glob("*/race.txt*"))
    assert [p.name for p in stored] == ["race.txt"]  # no .part left behind


@pytest.mark.parametrize("path", ["/ingest", "/query"])
def test_deeply_nested_json_is_4xx(server: Any, path: str) -> None:
    body = b'{"paths": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = raw_json(server, path, body, auth=True)
    one_line_4xx(r)


@pytest.mark.parametrize("path, body", [
    ("/ingest", b'{"paths": ["\xff"]}'),  # not UTF-8
    ("/ingest", b'{"paths": NaN}'),  # Python's parser reads NaN and Infinity; JSON has neither
    ("/ingest", b'{"paths": [Infinity]}'),
    ("/query", b'{"query": NaN}'),  # a 422 that echoes NaN back must still render
    ("/query", b'{"query": "aspirin", "top_n": 1e400}'),
])
def test_json_that_is_not_json_is_4xx(server: Any, path: str, body: bytes) -> None:
    one_line_4xx(raw_json(server, path, body, auth=True))


def test_top_n_above_the_candidates_is_422_naming_the_limit(server: Any) -> None:
    r = post(server, "/query", json={"query": "aspirin", "top_n": 21})  # retrieval.candidates = 20
    assert r.status_code == 422 and "retrieval.candidates (20)" in one_line_4xx(r)
    assert post(server, "/query", json={"query": "aspirin", "top_n": 20, "generate": False}).status_code == 200


def test_a_malformed_document_id_is_422(server: Any) -> None:
    r = httpx.delete(server.url + "/documents/d%00x", headers=server.auth)
    assert r.status_code == 422
    one_line_4xx(r)


# ---------------------------------------------------------------------------------------- serve itself

def test_serve_on_a_locked_home_is_one_line_and_fails(server: Any) -> None:
    """The fixture's server writes to its home (it has a token): a second writer must say so and exit."""
    proc = subprocess.run(serve_command(server.home, free_port()), capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "FANRAG_TOKEN": TOKEN})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "being written by another process" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "uvicorn" not in proc.stderr.lower()


def test_read_token(server: Any) -> None:
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app

    settings = Settings.load(home=server.home, overrides={"server": {"read_token": "r34d"}}, env={})
    with TestClient(create_app(settings)) as client:
        q = {"query": "aspirin", "generate": False}
        for path in ("/documents", "/metrics"):
            assert client.get(path).status_code == 401
        r = client.post("/query", json=q, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "server.read_token" in r.json()["detail"]
        assert client.post("/query", json=q, headers={"Authorization": "Bearer r34d"}).status_code == 200
        assert client.get("/documents", headers={"Authorization": "Bearer r34d"}).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness and the schema stay open
        assert client.get("/openapi.json").status_code == 200

