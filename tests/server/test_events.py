"""What the web UI reads besides answers, against a real ``fanrag serve``: a chunk in its document
(``GET /documents/{id}``) and the ingest runs as they happen (``GET /events/ingest``)."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from .conftest import read_events


def query(served: Any, text: str, top_n: int = 3) -> dict[str, Any]:
    r = httpx.post(served.url + "/query", json={"query": text, "top_n": top_n}, headers=served.read, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_cited_chunk_opens_in_its_document_with_its_page(served: Any) -> None:
    hit = query(served, "A document becomes visible only after every store has it")["hits"][0]
    assert hit["source"] == "pipeline.pdf" and hit["page"] >= 1
    r = httpx.get(f"{served.url}/documents/{hit['doc_id']}", params={"around": hit["chunk_id"]}, headers=served.read)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["focus"] == hit["chunk_id"] and d["document"]["source"] == "pipeline.pdf"
    assert d["document"]["n_pages"] == 3 and "/" not in d["document"]["uri"].removeprefix("file://")
    focused = next(c for c in d["chunks"] if c["chunk_id"] == hit["chunk_id"])
    assert focused["text"] == hit["text"] and focused["page_start"] == hit["page"]
    assert focused["page_start"] <= 2 <= focused["page_end"]  # the sentence is on page 2
    assert [c["position"] for c in d["chunks"]] == sorted(c["position"] for c in d["chunks"])
    assert d["total_chunks"] >= len(d["chunks"]) >= 1


def test_the_chunk_window_is_paged_and_guarded(served: Any) -> None:
    hit = query(served, "Chapter 3. Page ranges")["hits"][0]
    url = f"{served.url}/documents/{hit['doc_id']}"
    whole = httpx.get(url, headers=served.read).json()
    assert [c["chunk_id"] for c in whole["chunks"]][:1] == [whole["chunks"][0]["chunk_id"]] and whole["offset"] == 0
    one = httpx.get(url, params={"limit": 1, "offset": whole["total_chunks"] - 1}, headers=served.read).json()
    assert one["chunks"] == whole["chunks"][-1:]
    assert httpx.get(url).status_code == 401  # the read token guards it
    assert httpx.get(url, params={"around": "nope"}, headers=served.read).status_code == 404
    assert httpx.get(served.url + "/documents/dnope", headers=served.read).status_code == 404
    assert httpx.get(url, params={"limit": 0}, headers=served.read).status_code == 422


def states_until(served: Any, done: Any, start: threading.Event, seen: list[dict[str, Any]]) -> None:
    """Read ``state`` events into ``seen`` until ``done(state)``; ``start`` is set once connected."""
    with httpx.stream("GET", served.url + "/events/ingest", headers=served.read, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event, data in read_events(r):
            assert event == "state"
            seen.append(data)
            start.set()
            if done(data):
                return


def test_an_upload_is_followed_to_its_commit_and_a_bad_file_to_its_reason(served: Any) -> None:
    assert httpx.get(served.url + "/events/ingest", timeout=10).status_code == 401
    seen: list[dict[str, Any]] = []
    connected = threading.Event()

    def finished(state: dict[str, Any]) -> bool:
        runs = [r for r in state["runs"] if "glacier.txt" in r["label"]]
        return bool(runs) and runs[0]["status"] == "done"

    reader = threading.Thread(target=states_until, args=(served, finished, connected, seen), daemon=True)
    reader.start()
    assert connected.wait(30)
    glacier = b"A glacier is a persistent body of dense ice that moves under its own weight. Glaciers carve valleys.\n"
    files = [("files", ("glacier.txt", glacier, "text/plain")),
             ("files", ("broken.pdf", b"%PDF-1.7 this is not a PDF at all", "application/pdf"))]
    r = httpx.post(served.url + "/ingest", files=files, headers=served.auth, timeout=120)
    assert r.status_code == 200 and r.json()["ok"] == 1 and len(r.json()["failed"]) == 1, r.text
    reader.join(30)
    assert not reader.is_alive() and finished(seen[-1])
    run = next(r for r in seen[-1]["runs"] if "glacier.txt" in r["label"])
    assert run["label"].startswith("uploads/") and str(served.home) not in str(seen[-1])  # names, not paths
    assert run["stages"]["committed"] == 1 and run["stages"]["failed"] == 1
    assert run["parts"]["planned"] == run["parts"]["done"] >= 1
    assert run["summary"]["ok"] == 1 and run["chunks"]["committed"] == run["summary"]["chunks"] >= 1
    (failure,) = run["summary"]["failed"]
    assert failure["source"].startswith("uploads/") and failure["source"].endswith("broken.pdf") and failure["reason"]
    assert any(s["runs"] and s["runs"][0]["status"] in ("waiting", "running") for s in seen)  # seen live
