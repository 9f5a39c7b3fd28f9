"""``GET /openapi.json``: an OpenAPI 3.1 document of this gateway's own HTTP surface, built once
at start-up for the endpoints that are on.

Request bodies are the JSON schemas of the very models the endpoints validate with; responses are
described by the models below, which follow what the endpoints send (a test checks real
responses against this document, so the two cannot drift apart).  No auth, no secrets: it says
what the API is, not how this gateway is configured.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from openclaw import __version__
from openclaw.config.schema import Config
from openclaw.gateway.http.embeddings import EmbeddingsRequest
from openclaw.gateway.http.tools_invoke import InvokeBody
from openclaw.gateway.openai_schema import ChatCompletionRequest
from openclaw.gateway.responses_schema import CreateResponse


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- shared -------------------------------------------------------------------------------------


class ErrorDetail(_Doc):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Doc):
    error: ErrorDetail


class UsageDetails(_Doc):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class CompletionUsage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: UsageDetails | None = None
    completion_tokens_details: UsageDetails | None = None


# --- chat completions ---------------------------------------------------------------------------


class FunctionCall(_Doc):
    name: str
    arguments: str


class ToolCall(_Doc):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Doc):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(_Doc):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    logprobs: None = None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ToolCallDelta(_Doc):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class Delta(_Doc):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Doc):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None
    logprobs: None = None


class ChatCompletionChunk(_Doc):
    """One ``data:`` event of a stream (then ``data: [DONE]``).  With tool events asked for, a
    chunk may carry ``openclaw_tool``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    openclaw_tool: dict[str, Any] | None = None


# --- models, embeddings -------------------------------------------------------------------------


class Model(_Doc):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Doc):
    object: Literal["list"]
    data: list[Model]


class Embedding(_Doc):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a base64 string with encoding_format=base64


class EmbeddingUsage(_Doc):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Doc):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- responses ----------------------------------------------------------------------------------


class OutputText(_Doc):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]


class OutputMessage(_Doc):
    type: Literal["message"]
    id: str
    status: str
    role: Literal["assistant"]
    content: list[OutputText]


class FunctionCallItem(_Doc):
    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str
    status: str


class ResponseUsage(_Doc):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseError(_Doc):
    code: str
    message: str


class ResponseObject(_Doc):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "failed", "in_progress", "incomplete"]
    model: str
    output: list[OutputMessage | FunctionCallItem]
    usage: ResponseUsage | None = None
    error: ResponseError | None
    incomplete_details: dict[str, str] | None
    previous_response_id: str | None
    instructions: str | None
    store: bool
    metadata: dict[str, str]


class ResponseStreamEvent(_Doc):
    """One ``event:`` / ``data:`` pair of a Responses stream (no ``[DONE]`` at the end)."""

    type: str
    sequence_number: int


class ResponseDeleted(_Doc):
    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]


class InputItemList(_Doc):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


# --- tools/invoke, health -----------------------------------------------------------------------


class InvokeResult(_Doc):
    ok: Literal[True]
    result: dict[str, Any]


class InvokeError(_Doc):
    ok: Literal[False]
    error: dict[str, str]


class Health(_Doc):
    status: str


_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    CreateResponse,
    EmbeddingsRequest,
    InvokeBody,
    ErrorResponse,
    ChatCompletion,
    ChatCompletionChunk,
    ModelList,
    Model,
    EmbeddingList,
    ResponseObject,
    ResponseStreamEvent,
    ResponseDeleted,
    InputItemList,
    InvokeResult,
    InvokeError,
    Health,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str = "") -> dict[str, Any]:
    return {
        "description": description or "OK",
        "content": {"application/json": {"schema": _ref(name)}},
    }


_ERRORS = {
    code: _json("ErrorResponse", text)
    for code, text in (
        ("400", "Bad request"),
        ("401", "Missing or wrong credentials"),
        ("404", "Not found"),
        ("429", "Too many failed attempts, or the upstream's rate limit"),
        ("502", "The model failed"),
        ("503", "Busy, or the session store is unavailable"),
        ("504", "The run timed out"),
    )
}


def _post(summary: str, request: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {"200": ok, **_ERRORS},
        }
    }


def _streamed(json_name: str, event_name: str) -> dict[str, Any]:
    return {
        "description": "The answer; with `stream: true`, server-sent events",
        "content": {
            "application/json": {"schema": _ref(json_name)},
            "text/event-stream": {"schema": _ref(event_name)},
        },
    }


def _response_id() -> list[dict[str, Any]]:
    return [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document of the endpoints ``config`` turns on."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    endpoints = config.gateway.http.endpoints
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness (no auth)",
                "security": [],
                "responses": {"200": _json("Health")},
            }
        },
        "/tools/invoke": {
            "post": {
                "summary": "Run one of an agent's tools",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("InvokeBody")}},
                },
                "responses": {
                    "200": _json("InvokeResult"),
                    **{
                        code: _json("InvokeError", why)
                        for code, why in (
                            ("400", "Bad input"),
                            ("401", "Missing or wrong credentials"),
                            ("404", "Unknown tool, or not allowed over HTTP"),
                        )
                    },
                },
            }
        },
    }
    if endpoints.chat_completions.enabled:
        paths["/v1/chat/completions"] = _post(
            "An agent run, OpenAI Chat Completions",
            "ChatCompletionRequest",
            _streamed("ChatCompletion", "ChatCompletionChunk"),
        )
    if endpoints.responses.enabled:
        paths["/v1/responses"] = _post(
            "An agent run, OpenAI Responses API",
            "CreateResponse",
            _streamed("ResponseObject", "ResponseStreamEvent"),
        )
        paths["/v1/responses/{response_id}"] = {
            "get": {
                "summary": "A stored response",
                "parameters": _response_id(),
                "responses": {"200": _json("ResponseObject"), "404": _ERRORS["404"]},
            },
            "delete": {
                "summary": "Delete a stored response",
                "parameters": _response_id(),
                "responses": {"200": _json("ResponseDeleted"), "404": _ERRORS["404"]},
            },
        }
        paths["/v1/responses/{response_id}/input_items"] = {
            "get": {
                "summary": "A stored response's input items",
                "parameters": _response_id(),
                "responses": {"200": _json("InputItemList"), "404": _ERRORS["404"]},
            }
        }
    if endpoints.chat_completions.enabled or endpoints.responses.enabled:
        paths["/v1/models"] = {
            "get": {"summary": "The agents as models", "responses": {"200": _json("ModelList")}}
        }
        paths["/v1/models/{model_id}"] = {
            "get": {
                "summary": "One agent as a model",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _json("Model"), "400": _ERRORS["400"], "404": _ERRORS["404"]},
            }
        }
        paths["/v1/embeddings"] = _post(
            "Embeddings from an agent's embedding model",
            "EmbeddingsRequest",
            _json("EmbeddingList"),
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenClaw Gateway",
            "version": __version__,
            "description": "Agents behind OpenAI's API. Every request is an agent run.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The gateway token or password (modes token / password).",
                }
            },
        },
    }
