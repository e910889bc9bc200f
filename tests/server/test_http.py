"""The HTTP API through a real uvicorn process (``fanrag serve``)."""

from __future__ import annotations

from typing import Any

import httpx

from fanrag.settings import Settings

QUERY_KEYS = {"answer", "citations", "hits", "timings", "spans", "rerank", "transform"}


def post(server: Any, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kw)


def test_health_and_openapi(server: Any) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "writes": True}
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/query", "/ingest", "/documents", "/documents/{doc_id}", "/healthz", "/metrics", "/events/ingest",
            "/v1/chat/completions", "/v1/models"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_writes_need_the_token(server: Any) -> None:
    body = {"paths": ["aspirin.txt"]}
    assert post(server, "/ingest", json=body).status_code == 401
    r = post(server, "/ingest", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.delete(server.url + "/documents/dnope").status_code == 401


def test_paths_outside_the_ingest_root_are_refused(server: Any) -> None:
    for p in [str(server.outside / "secret.txt"), "../" + server.outside.name + "/secret.txt", "/etc/passwd"]:
        r = post(server, "/ingest", json={"paths": [p]}, headers=server.auth)
        assert r.status_code == 403 and "outside server.ingest_root" in r.json()["detail"]


def test_bad_requests_are_422(server: Any) -> None:
    assert post(server, "/query", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert post(server, "/query", json={"top_n": 3}).status_code == 422
    assert post(server, "/query", json={"query": "x", "branches": ["sparse"]}).status_code == 422
    assert post(server, "/ingest", content=b"{oops", headers={**server.auth, "content-type": "application/json"}
                ).status_code == 422
    assert post(server, "/ingest", json={"paths": []}, headers=server.auth).status_code == 422
    assert post(server, "/ingest", content=b"x", headers={**server.auth, "content-type": "text/plain"}
                ).status_code == 415


def test_ingest_query_list_delete(server: Any) -> None:
    r = post(server, "/ingest", json={"paths": ["aspirin.txt", str(server.root / "volcano.md")]}, headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] == 2 and r.json()["failed"] == []

    r = post(server, "/query", json={"query": "What does volcanic ash from Mount Etna disrupt?", "top_n": 2})
    assert r.status_code == 200, r.text
    d = r.json()
    assert set(d) == QUERY_KEYS and d["hits"][0]["source"] == "volcano.md"  # relative to the ingest root
    assert d["citations"][0]["doc_id"] == d["hits"][0]["doc_id"]
    assert set(d["timings"]["branches"]) == set(Settings().retrieval.branches)  # every default branch ran

    docs = httpx.get(server.url + "/documents", params={"status": "committed"}).json()["documents"]
    volcano = next(doc for doc in docs if doc["source"].endswith("volcano.md"))
    r = httpx.delete(f"{server.url}/documents/{volcano['doc_id']}", headers=server.auth)
    assert r.status_code == 200 and r.json()["deleted"] == 1
    d = post(server, "/query", json={"query": "What does volcanic ash from Mount Etna disrupt?"}).json()
    assert volcano["doc_id"] not in {h["doc_id"] for h in d["hits"]}
    assert httpx.delete(f"{server.url}/documents/{volcano['doc_id']}", headers=server.auth).status_code == 404

    # the file did not change, yet re-ingesting it brings the deleted document back (not "unchanged")
    r = post(server, "/ingest", json={"paths": ["volcano.md"]}, headers=server.auth)
    assert (r.json()["ok"], r.json()["unchanged"]) == (1, 0), r.text
    docs = httpx.get(server.url + "/documents", params={"status": "committed"}).json()["documents"]
    assert volcano["doc_id"] in {doc["doc_id"] for doc in docs}
    r = post(server, "/ingest", json={"paths": ["volcano.md"]}, headers=server.auth)
    assert (r.json()["ok"], r.json()["unchanged"]) == (0, 1), r.text


def test_multipart_upload_then_query(server: Any) -> None:
    text = b"Insulin is a hormone made by the pancreas. Type 1 diabetes destroys the beta cells that make insulin.\n"
    files = {"files": ("insulin.txt", text, "text/plain")}
    r = post(server, "/ingest", files=files, headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] == 1
    d = post(server, "/query", json={"query": "Which cells does type 1 diabetes destroy?", "top_n": 1}).json()
    assert d["hits"][0]["source"].endswith("insulin.txt")
    assert "beta cells" in d["answer"]


def test_an_upload_carries_metadata_that_filters_find(server: Any) -> None:
    text = b"Glaciers in the Alps lost a tenth of their ice in two summers, survey teams report.\n"
    meta = '{"team": "alpine", "year": 2024, "tags": ["ice", "survey"]}'
    r = post(server, "/ingest", files={"files": ("glaciers.txt", text, "text/plain")}, data={"metadata": meta},
             headers=server.auth)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] == 1 and r.json()["tagged"] == 1
    q = {"query": "How much ice did Alpine glaciers lose?", "top_n": 1}
    hits = post(server, "/query", json=q | {"filter": "team = alpine and year >= 2024 and tags = ice"}).json()["hits"]
    assert [h["source"].rsplit("/", 1)[-1] for h in hits] == ["glaciers.txt"]
    assert post(server, "/query", json=q | {"filter": "team = other"}).json()["hits"] == []
    for bad, why in (('{"source": "x"}', "bad tag key 'source'"), ('[1]', "a JSON object"),
                     ('{"k": {"a": 1}}', "bad metadata value for 'k'"), ("{", "invalid JSON")):
        r = post(server, "/ingest", files={"files": ("g.txt", text, "text/plain")}, data={"metadata": bad},
                 headers=server.auth)
        assert r.status_code in (400, 422) and why in r.json()["detail"], (bad, r.text)


def test_bodies_over_the_limit_are_413(server: Any) -> None:
    big = b"x" * (1024 * 1024 + 10)  # server.max_upload_mb = 1 for this server
    r = post(server, "/ingest", files={"files": ("big.txt", big, "text/plain")}, headers=server.auth)
    assert r.status_code == 413

    def chunks() -> Any:  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(20):
            yield b"y" * 65536

    r = post(server, "/ingest", content=chunks(), headers={**server.auth, "content-type": "application/json"})
    assert r.status_code == 413


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_metrics(server: Any) -> None:
    assert post(server, "/ingest", json={"paths": ["aspirin.txt"]}, headers=server.auth).status_code == 200
    assert post(server, "/query", json={"query": "aspirin side effects"}).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert 'fanrag_query_stage_seconds_bucket{le="0.015",stage="total"}' in text
    assert _metric(text, 'fanrag_query_stage_seconds_count{stage="branch_dense"}') >= 1
    assert _metric(text, 'fanrag_branch_results_total{branch="bm25",outcome="ok"}') >= 1
    # aspirin.txt is committed now or was already: either way one document was counted
    assert _metric(text, "fanrag_ingest_documents_total{") >= 1
    assert 'fanrag_ingest_last_chunks_per_second' in text


def test_without_a_token_the_api_is_read_only(server: Any) -> None:
    # an in-process app over the same home while the server process holds the writer lock
    from fastapi.testclient import TestClient

    from fanrag.server.app import create_app

    settings = Settings.load(home=server.home, env={})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "writes": False}
        r = client.post("/ingest", json={"paths": ["x"]}, headers=server.auth)
        assert r.status_code == 403 and "writes are disabled" in r.json()["detail"]
        assert client.post("/query", json={"query": "aspirin", "generate": False}).status_code == 200
