"""The OpenAI-compatible API (``/v1``) through the official ``openai`` client, against a real ``fanrag serve``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import LLM_REPLY, READ_TOKEN

openai = pytest.importorskip("openai")

QUESTION = "What does volcanic ash from Mount Etna disrupt?"


def client(url: str, key: str = READ_TOKEN) -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_models_lists_fanrag(served: Any) -> None:
    assert [m.id for m in client(served.url).models.list()] == ["fanrag"]


def test_a_completion_answers_with_citations_and_its_sources(served: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about tides."},
                {"role": "assistant", "content": "..."}, {"role": "user", "content": QUESTION}]
    done = client(served.url).chat.completions.create(model="any-name", messages=messages)
    assert done.model == "any-name" and done.object == "chat.completion"  # echoed
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    text = choice.message.content
    answer, _, listed = text.partition("\n\nSources:\n")
    assert "Mount Etna" in answer and "[1]" in answer  # the last user message was the question
    assert listed.splitlines()[0] == "[1] volcano.md"  # the cited source, named as the read API names it
    extra = done.model_extra["fanrag"]
    sources, citations = extra["sources"], extra["citations"]
    assert sources[0]["n"] == 1 and sources[0]["source"] == "volcano.md" and "Mount Etna" in sources[0]["text"]
    assert citations[0]["n"] == 1 and citations[0]["chunk_id"] == sources[0]["chunk_id"]


def test_a_streamed_completion_carries_the_same_answer(served: Any) -> None:
    api = client(served.url)
    plain = api.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(api.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                              stream=True))
    assert {c.model for c in chunks} == {"m"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["fanrag"]["sources"][0]["source"] == "volcano.md"  # before the answer
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["fanrag"]["citations"] == plain.model_extra["fanrag"]["citations"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content


def test_a_model_streams_through_the_endpoint(llm_served: Any) -> None:
    chunks = list(client(llm_served.url).chat.completions.create(
        model="fanrag", messages=[{"role": "user", "content": QUESTION}], stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(deltas) > 5  # the model's words, one by one, then the sources
    assert "".join(deltas).startswith(LLM_REPLY.split()[0]) and "\n\nSources:\n[1] volcano.md" in deltas[-1]


def test_the_read_token_is_the_api_key(served: Any) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        client(served.url, key="wrong").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 401 and "server.read_token" in err.value.message
    with pytest.raises(openai.AuthenticationError):
        client(served.url, key="wrong").models.list()
    # the write token reads too
    from .conftest import TOKEN

    assert client(served.url, key=TOKEN).models.list().data[0].id == "fanrag"


def test_bad_requests_get_openai_shaped_errors(served: Any) -> None:
    api = client(served.url)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        api.chat.completions.create(model="m", messages=[{"role": "system", "content": "no question here"}])
    assert "no user message" in err.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        api.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 4001}])
    r = httpx.post(served.url + "/v1/chat/completions", json={"messages": "nope"}, headers=served.read)
    error = r.json()["error"]
    assert r.status_code == 422 and error["type"] == "invalid_request_error" and error["code"] == 422
    assert error["message"].startswith("messages: ")
    # content parts: the text parts are the question
    done = api.chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": QUESTION}]}])
    assert "Mount Etna" in done.choices[0].message.content
