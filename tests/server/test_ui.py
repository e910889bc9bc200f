"""The web UI in a real headless browser (Debian's chromium, driven by Playwright; never ``playwright
install``) against a real ``fanrag serve``: ask a question from the keyboard, wait for the streamed
answer, open every citation (the chunk view must show the cited chunk's text), check that the diagram has
a bar per branch and per shard search, then upload a file in the ingest view and watch it commit.

Screenshots go to tests/artifacts/ (ignored by git); with FANRAG_UPDATE_UI_PNG=1 the ask view is also
saved as docs/ui.png, the README's picture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import TOKEN

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no chromium binary: install Debian's chromium package (scripts/test.sh does, as root with apt)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
README_PNG = Path(__file__).parents[2] / "docs" / "ui.png"
QUESTION = "What does volcanic ash from Mount Etna disrupt?"
WAIT_MS = 60_000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def page(tmp_path: Path) -> Any:
    """A fresh browser profile and one page; console errors and page errors are collected in ``page.errors``."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            pg = context.new_page()
            pg.set_default_timeout(WAIT_MS)
            pg.errors = []
            pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))
            yield pg
        finally:
            context.close()


def open_ui(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.fill("#token", TOKEN)  # the write token: it reads, and it uploads
    page.dispatch_event("#token", "change")


def test_ask_watch_the_fan_out_and_open_every_citation(served: Any, page: Any) -> None:
    open_ui(page, served.url)
    page.fill("#question", QUESTION)
    with page.expect_request("**/query") as sent:
        page.press("#question", "Enter")  # the keyboard submits
    assert sent.value.post_data_json == {"query": QUESTION, "stream": True}  # no filter when it is empty
    page.wait_for_selector("#answer[data-done=true]")
    assert "Mount Etna" in page.inner_text("#answer") and page.is_hidden("#ask-error")

    links = page.query_selector_all("#answer a.cite")
    assert links, page.inner_text("#answer")
    for link in links:
        chunk_id = link.get_attribute("data-chunk-id")
        quoted = page.inner_text(f'#sources li[data-chunk-id="{chunk_id}"] .chunk-text')
        link.click()
        focus = page.wait_for_selector("#doc-view[open] #doc-chunks li.focus")
        assert focus.get_attribute("data-chunk-id") == chunk_id
        assert focus.inner_text().endswith(quoted.strip()) and quoted.strip()
        page.keyboard.press("Escape")  # the dialog closes from the keyboard
        page.wait_for_selector("#doc-view[open]", state="detached")

    # a bar per step the server recorded: every branch, every shard search under its branch
    plain = httpx.post(served.url + "/query", json={"query": QUESTION}, headers=served.read, timeout=60).json()
    expected = {(s["name"], s.get("parent", "")) for s in plain["spans"]}
    rows = page.query_selector_all("#diagram li")
    drawn = {(r.get_attribute("data-span"), r.get_attribute("data-parent")) for r in rows}
    assert drawn == expected
    branches = {n for n, parent in drawn if n.startswith("branch:")}
    assert branches == {f"branch:{b}" for b in plain["timings"]["branches"]}
    assert sum(1 for _, parent in drawn if parent == "branch:dense") >= 2  # the default index has two shards
    for row in rows:  # each bar was drawn: a width once its replay ended
        bar = row.query_selector(".bar")
        page.wait_for_function("bar => bar.getBoundingClientRect().width >= 1", arg=bar)
    page.focus("#zoom")
    page.keyboard.press("Space")  # zoom to retrieval: the same rows at another scale
    assert page.is_checked("#zoom") and len(page.query_selector_all("#diagram li")) == len(rows)

    page.evaluate("document.activeElement.blur()")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-ask.png"), full_page=True)
    if os.environ.get("FANRAG_UPDATE_UI_PNG") == "1":
        page.screenshot(path=str(README_PNG), full_page=True)
    assert page.errors == []


def test_a_refused_filter_shows_the_servers_error(served: Any, page: Any) -> None:
    open_ui(page, served.url)
    page.fill("#question", QUESTION)
    page.fill("#filter", "source = (")  # refused: unknown to this server, or malformed
    with page.expect_request("**/query") as sent:
        page.click("#ask-button")
    assert sent.value.post_data_json == {"query": QUESTION, "stream": True, "filter": "source = ("}
    error = page.wait_for_selector("#ask-error:not([hidden])")
    status, _, reason = error.inner_text().partition(": ")
    assert status.startswith("4") and reason  # the server's status and reason, as it gave them
    assert page.inner_text("#answer") == "" and page.is_enabled("#ask-button")


def test_upload_a_file_and_watch_it_commit(served: Any, page: Any, tmp_path: Path) -> None:
    note = tmp_path / "moraine.txt"
    note.write_text("A moraine is the rock and soil a glacier leaves behind as it retreats.\n")
    open_ui(page, served.url)
    page.click("#tab-ingest")
    page.wait_for_selector("#live:text('(live)')")
    page.set_input_files("#files", str(note))
    page.click("#upload-button")
    page.wait_for_selector("#upload-status:text('done: 1 committed')")
    run = page.wait_for_selector("#runs li[data-status=done]:has-text('moraine.txt')")
    assert "1 committed" in run.inner_text()
    assert page.inner_text("#stages [data-stage=committed] dd").startswith("1")
    assert page.query_selector_all("#batches li")  # the embedding batch it took
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-ingest.png"), full_page=True)
    assert page.errors == []
