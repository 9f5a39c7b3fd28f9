"""``GET /openapi.json``: served without auth and without secrets, listing the endpoints that are
on, and every real answer of those endpoints valid against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.e2e.conftest import chat_config
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream, ToolCalls

URI = "https://gateway.example/openapi.json"


def checker(doc: dict[str, Any]) -> Callable[[Any, str], None]:
    registry = Registry().with_resource(
        URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )

    def check(obj: Any, name: str) -> None:
        schema = {"$ref": f"{URI}#/components/schemas/{name}"}
        errors = list(Draft202012Validator(schema, registry=registry).iter_errors(obj))
        assert not errors, f"{name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )

    return check


def test_the_document_describes_what_the_gateway_answers(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    cfg["models"]["providers"]["fake"]["models"].append({"id": "embed"})
    cfg["agents"]["defaults"]["embeddings"] = {"model": "fake/embed"}
    cfg["tools"] = {"profile": "coding"}
    gw = gateway_factory(cfg)
    raw = httpx.get(gw.url + "/openapi.json")  # no auth
    assert raw.status_code == 200
    assert gw.token not in raw.text and "upstream-key" not in raw.text
    doc = raw.json()
    validate_openapi(doc)  # a valid OpenAPI 3.1 document
    assert {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/embeddings",
        "/tools/invoke",
        "/health",
    } <= set(doc["paths"])
    check = checker(doc)
    h = gw.auth_headers()
    url = gw.url

    def post(path: str, body: Any) -> httpx.Response:
        return httpx.post(url + path, json=body, headers=h, timeout=30)

    chat = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
    check(post("/v1/chat/completions", chat).json(), "ChatCompletion")
    upstream.script(ToolCalls(calls=(("f", "{}"),)))
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    check(post("/v1/chat/completions", {**chat, "tools": [tool]}).json(), "ChatCompletion")
    streamed = post(
        "/v1/chat/completions", {**chat, "stream": True, "stream_options": {"include_usage": True}}
    )
    for line in streamed.text.splitlines():
        if line.startswith("data: {"):
            check(json.loads(line[6:]), "ChatCompletionChunk")
    check(post("/v1/chat/completions", {"model": "openclaw"}).json(), "ErrorResponse")
    check(httpx.get(url + "/v1/models", headers=h).json(), "ModelList")
    check(httpx.get(url + "/v1/models/openclaw", headers=h).json(), "Model")
    check(
        post("/v1/embeddings", {"model": "openclaw", "input": ["a", "b"]}).json(), "EmbeddingList"
    )
    response = post("/v1/responses", {"model": "openclaw", "input": "hi"}).json()
    check(response, "ResponseObject")
    events = post("/v1/responses", {"model": "openclaw", "input": "hi", "stream": True}).text
    for line in events.splitlines():
        if line.startswith("data: "):
            check(json.loads(line[6:]), "ResponseStreamEvent")
            if '"response.completed"' in line:
                check(json.loads(line[6:])["response"], "ResponseObject")
    items = httpx.get(url + f"/v1/responses/{response['id']}/input_items", headers=h).json()
    check(items, "InputItemList")
    check(
        httpx.delete(url + f"/v1/responses/{response['id']}", headers=h).json(), "ResponseDeleted"
    )
    check(post("/tools/invoke", {"tool": "ls"}).json(), "InvokeResult")
    check(post("/tools/invoke", {"tool": "nope"}).json(), "InvokeError")
    check(httpx.get(url + "/health").json(), "Health")


def test_only_the_endpoints_that_are_on(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"] = False
    gw = gateway_factory(cfg)
    doc = httpx.get(gw.url + "/openapi.json").json()
    assert set(doc["paths"]) == {"/health", "/tools/invoke"}
