"""``POST /v1/embeddings`` with the official SDK: an OpenAI-compatible upstream's vectors (float
and base64, batches, token arrays, dimensions), identical inputs computed once, real usage, the
model override, limits and errors; and the embedded local model answering with no network."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import chat_config
from tests.harness import RunningGateway
from tests.openai_spec import conforms
from tests.upstream import FakeUpstream, HttpError, ToolCalls
from tests.upstream.openai_wire import fake_vector


def embeddings_config(up: FakeUpstream, **defaults: Any) -> dict[str, Any]:
    cfg = chat_config(up)
    cfg["models"]["providers"]["fake"]["models"].append({"id": "embed-small"})
    cfg["agents"]["defaults"]["embeddings"] = {"model": "fake/embed-small"}
    cfg["agents"]["defaults"].update(defaults)
    return cfg


@pytest.fixture
def gw(upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(embeddings_config(upstream))


def client(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0)


def test_float_and_base64_batches(gw: RunningGateway, upstream: FakeUpstream) -> None:
    texts = ["the cat sat", "on the mat", "the cat sat"]
    with client(gw) as c:
        raw = c.embeddings.with_raw_response.create(
            model="openclaw", input=texts, encoding_format="float"
        )
        b64 = c.embeddings.with_raw_response.create(
            model="openclaw", input=texts, encoding_format="base64"
        )
    body = raw.http_response.json()
    conforms(body, "CreateEmbeddingResponse")
    # (OpenAI's schema types `embedding` as an array only; with base64 its API, and we, send
    # the string the SDK decodes.)
    assert body["model"] == "openclaw" and body["object"] == "list"
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert vectors == [fake_vector(t) for t in texts]
    # One call to the model, each distinct input once; usage as the model counted it.
    [first, _] = upstream.embedding_requests
    assert first.body["input"] == ["the cat sat", "on the mat"]
    assert first.body["model"] == "embed-small"
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    # base64: little-endian float32, as OpenAI sends it; the SDK decodes it to the same floats.
    encoded = b64.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(vectors[0])}f", base64.b64decode(encoded))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vectors[0], strict=True))
    # The SDK's default: it asks for base64 itself and decodes it to floats.
    with client(gw) as c:
        default = c.embeddings.create(model="openclaw", input=texts[0])
    assert upstream.embedding_requests[-1].body["encoding_format"] == "float"
    got = default.data[0].embedding
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, vectors[0], strict=True))


def test_token_arrays_dimensions_and_a_single_string(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(gw) as c:
        one = c.embeddings.create(model="openclaw/beta", input="hello", dimensions=4)
        tokens = c.embeddings.create(model="openclaw", input=[[1, 2, 3], [4, 5]])
        flat = c.embeddings.create(model="openclaw", input=[7, 8, 9])
    assert len(one.data) == 1 and len(one.data[0].embedding) == 4
    assert upstream.embedding_requests[0].body["dimensions"] == 4
    assert upstream.embedding_requests[1].body["input"] == [[1, 2, 3], [4, 5]]
    assert tokens.usage.prompt_tokens == 5
    assert upstream.embedding_requests[2].body["input"] == [[7, 8, 9]]
    assert len(flat.data) == 1


def test_the_model_override(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = embeddings_config(upstream, models={"fake/embed-large": {"alias": "large"}})
    gw = gateway_factory(cfg)
    with client(gw) as c:
        c.embeddings.create(
            model="openclaw", input="x", extra_headers={"x-openclaw-model": "large"}
        )
        assert upstream.embedding_requests[-1].body["model"] == "embed-large"
        with pytest.raises(openai.BadRequestError) as info:
            c.embeddings.create(
                model="openclaw", input="x", extra_headers={"x-openclaw-model": "fake/other"}
            )
    assert info.value.body["param"] == "x-openclaw-model"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "openclaw"}, "input"),
        ({"model": "openclaw", "input": []}, "input"),
        ({"model": "openclaw", "input": [""]}, "input"),
        ({"model": "openclaw", "input": 5}, "input"),
        ({"model": "openclaw", "input": ["x" * 40_000]}, "input"),
        ({"model": "openclaw", "input": ["x"] * 3000}, "input"),
        ({"model": "openclaw", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "openclaw", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "x"}, "model"),
    ],
)
def test_bad_requests_are_400(gw: RunningGateway, body: dict[str, Any], param: str) -> None:
    res = httpx.post(gw.url + "/v1/embeddings", json=body, headers=gw.auth_headers())
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param
    conforms(res.json(), "ErrorResponse")


def test_auth_unknown_agent_and_upstream_failure(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    url = gw.url + "/v1/embeddings"
    assert httpx.post(url, json={"model": "openclaw", "input": "x"}).status_code == 401
    res = httpx.post(url, json={"model": "openclaw/ghost", "input": "x"}, headers=gw.auth_headers())
    assert res.status_code == 404
    upstream.embeddings_error = HttpError(500)
    res = httpx.post(url, json={"model": "openclaw", "input": "x"}, headers=gw.auth_headers())
    assert res.status_code == 502 and res.json()["error"]["type"] == "upstream_error"


def test_models_that_cannot_embed_say_so(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = chat_config(upstream)
    cfg["models"]["providers"]["claude"] = {
        "api": "anthropic-messages",
        "baseUrl": upstream.root_url,
        "apiKey": "k",
        "models": [{"id": "claude-test"}],
    }
    cfg["agents"]["defaults"]["embeddings"] = {"model": "claude/claude-test"}
    gw = gateway_factory(cfg)
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.embeddings.create(model="openclaw", input="x")
    assert "no embeddings API" in info.value.body["message"]  # type: ignore[index]


def test_the_embedded_local_model_answers_offline(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    """No embedding model configured: the packaged model computes them, no network, no key."""
    gw = gateway_factory(chat_config(upstream))
    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue rose."]
    with client(gw) as c:
        reply = c.embeddings.create(model="openclaw", input=texts)
        with pytest.raises(openai.BadRequestError) as info:
            c.embeddings.create(model="openclaw", input="x", dimensions=3)
    vectors = [d.embedding for d in reply.data]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 100
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    # Some meaning survives even in a small base model: the paraphrase is nearer.
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert reply.usage.prompt_tokens > 10
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]
    assert upstream.embedding_requests == []


def test_memory_search_turns_hybrid_with_an_embedding_model(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = embeddings_config(upstream)
    cfg["tools"] = {"profile": "coding"}
    gw = gateway_factory(cfg)
    memory = gw.state_dir / "workspace" / "memory"
    memory.mkdir(parents=True)
    (memory / "notes.md").write_text("The spare key is under the blue pot.\n")
    upstream.script(ToolCalls(calls=(("memory_search", json.dumps({"query": "spare key"})),)))
    with client(gw) as c:
        c.chat.completions.create(model="openclaw", messages=[{"role": "user", "content": "key?"}])
    [fed] = [m for m in upstream.model_requests[-1].body["messages"] if m["role"] == "tool"]
    result = json.loads(fed["content"])
    assert result["provider"] == "hybrid" and result["model"] == "fake/embed-small"
    assert result["results"][0]["path"] == "memory/notes.md"
    [call] = upstream.embedding_requests
    assert call.body["input"] == ["spare key", "The spare key is under the blue pot."]


def test_token_ids_beyond_the_vocabulary_are_400_not_a_crash(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    """Regression: llama.cpp aborted the whole process on a token id beyond its vocabulary."""
    gw = gateway_factory(chat_config(upstream))
    url = gw.url + "/v1/embeddings"
    for ids in ([[999_999_999]], [[262_144]], [[-5]], [[2**40]]):
        res = httpx.post(url, json={"model": "openclaw", "input": ids}, headers=gw.auth_headers())
        assert res.status_code == 400 and res.json()["error"]["param"] == "input", res.text
    res = httpx.post(url, json={"model": "openclaw", "input": [[5, 6]]}, headers=gw.auth_headers())
    assert res.status_code == 200
