"""``GET /openapi.json``: an OpenAPI 3.1 document of this gateway's own HTTP surface, built once
at start-up for the endpoints that are on.

Request bodies are the JSON schemas of the very models the endpoints validate with; responses are
described by the models below, which follow what the endpoints send (a test checks real
responses against this document, so the two cannot drift apart, and Schemathesis sends it
thousands of generated requests: ``tests/e2e/test_schemathesis.py``).  A ``text/event-stream``
is described event by event, as OpenAPI 3.2 describes sequential media: the event's fields, its
``data`` JSON text with a ``contentSchema``.  No auth, no secrets: it says what the API is, not
how this gateway is configured.
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
    """The JSON of one ``data:`` line of a Responses stream (no ``[DONE]`` at the end); the
    ``response.created``/``in_progress``/``completed``/``incomplete``/``failed`` events carry
    the response object as it stands."""

    type: str
    sequence_number: int
    response: ResponseObject | None = None


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


_WHY = {
    "400": "Bad request",
    "401": "Missing or wrong credentials",
    "403": "Refused without credentials: a cross-site request, or a non-loopback host name "
    "(auth mode none)",
    "404": "Not found",
    "408": "The request body did not arrive in time",
    "413": "The request body is too large",
    "429": "Too many failed attempts, or the upstream's rate limit",
    "502": "The model failed",
    "503": "Busy, or the session store is unavailable",
    "504": "The run timed out",
}
# Every operation behind the gateway secret may answer these (the auth check comes first).
_AUTH = ("401", "403", "429")
# And every one that reads a body these.
_BODY = ("400", "408", "413")


def _errors(*codes: str, schema: str = "ErrorResponse") -> dict[str, Any]:
    return {code: _json(schema, _WHY[code]) for code in sorted({*_AUTH, *codes})}


def _body(schema: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ref(schema),
                "examples": {name: {"value": value} for name, value in examples.items()},
            }
        },
    }


def _post(
    operation_id: str,
    summary: str,
    request: dict[str, Any],
    ok: dict[str, Any],
    *codes: str,
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "requestBody": request,
            "responses": {"200": ok, **_errors(*_BODY, *codes)},
        }
    }


def _sse_event(data: dict[str, Any], description: str) -> dict[str, Any]:
    """One server-sent event as OpenAPI describes the items of ``text/event-stream`` (its
    fields; ``event`` is ``message`` when the stream names none), ``data`` being JSON."""
    return {
        "type": "object",
        "description": description,
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": data,
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }


def _json_text(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


# A chat completions stream: chunks, an error object if the run fails after the stream started,
# then the literal ``[DONE]``.
_CHAT_SSE = _sse_event(
    {
        "anyOf": [
            {"const": "[DONE]"},
            _json_text({"anyOf": [_ref("ChatCompletionChunk"), _ref("ErrorResponse")]}),
        ]
    },
    "One event of a chat completions stream: a chunk, an error after the stream started, or "
    "`[DONE]` (the last).",
)
# A Responses stream: typed events (``event:`` is the ``type`` of its data), no ``[DONE]``.
_RESPONSES_SSE = _sse_event(
    _json_text(_ref("ResponseStreamEvent")),
    "One event of a Responses stream (`event:` names its `type`; a failure after the stream "
    "started is `response.failed`).",
)


def _streamed(json_name: str, event_name: str) -> dict[str, Any]:
    return {
        "description": "The answer; with `stream: true`, server-sent events",
        "content": {
            "application/json": {"schema": _ref(json_name)},
            "text/event-stream": {"schema": _ref(event_name)},
        },
    }


_QUESTION = "What is the capital of France?"
_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
_CHAT_EXAMPLES: dict[str, dict[str, Any]] = {
    "simple": {"model": "openclaw", "messages": [{"role": "user", "content": _QUESTION}]},
    "streamed": {
        "model": "openclaw/main",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me a story."},
        ],
    },
    "client tools": {
        "model": "openclaw",
        "user": "alice",
        "tools": [{"type": "function", "function": _TOOL}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    },
}
_RESPONSES_EXAMPLES: dict[str, dict[str, Any]] = {
    "simple": {"model": "openclaw", "instructions": "Be brief.", "input": _QUESTION},
    "streamed": {"model": "openclaw", "input": "Tell me a story.", "stream": True},
    "items": {
        "model": "openclaw/main",
        "tools": [{"type": "function", **_TOOL}],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}
        ],
        "max_output_tokens": 200,
        "metadata": {"ticket": "42"},
    },
}

# What a stored response's ``id`` leads to (for clients and tools that follow links).
_STORED_RESPONSE_LINKS = {
    name: {
        "operationId": operation,
        "parameters": {"response_id": "$response.body#/id"},
        "description": "With `store` (the default), the response is kept under its `id`.",
    }
    for name, operation in (
        ("GetResponse", "getResponse"),
        ("ListInputItems", "listInputItems"),
        ("DeleteResponse", "deleteResponse"),
    )
}


def _response_id() -> list[dict[str, Any]]:
    return [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _input_items_query() -> list[dict[str, Any]]:
    return [
        {
            "name": "limit",
            "in": "query",
            "description": "Items per page",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
        {
            "name": "order",
            "in": "query",
            "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
        },
        {
            "name": "after",
            "in": "query",
            "description": "The page starts after this item id",
            "schema": {"type": "string"},
        },
        {
            "name": "before",
            "in": "query",
            "description": "The page ends before this item id",
            "schema": {"type": "string"},
        },
    ]


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document of the endpoints ``config`` turns on."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    endpoints = config.gateway.http.endpoints
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness (no auth)",
                "security": [],
                "responses": {"200": _json("Health")},
            }
        },
        "/tools/invoke": {
            "post": {
                "operationId": "invokeTool",
                "summary": "Run one of an agent's tools",
                "requestBody": _body(
                    "InvokeBody",
                    {
                        "search": {"tool": "memory_search", "args": {"query": "wifi password"}},
                        "dry run": {"tool": "read", "args": {"path": "notes.md"}, "dryRun": True},
                    },
                ),
                "responses": {
                    "200": _json("InvokeResult"),
                    **_errors(*_BODY, "503", schema="InvokeError"),
                    "404": _json("InvokeError", "Unknown tool, or not allowed over HTTP"),
                },
            }
        },
    }
    if endpoints.chat_completions.enabled:
        paths["/v1/chat/completions"] = _post(
            "createChatCompletion",
            "An agent run, OpenAI Chat Completions",
            _body("ChatCompletionRequest", _CHAT_EXAMPLES),
            _streamed("ChatCompletion", "ChatCompletionsSseEvent"),
            "404",
            "502",
            "503",
            "504",
        )
    if endpoints.responses.enabled:
        created = _streamed("ResponseObject", "ResponsesSseEvent")
        created["links"] = _STORED_RESPONSE_LINKS
        paths["/v1/responses"] = _post(
            "createResponse",
            "An agent run, OpenAI Responses API",
            _body("CreateResponse", _RESPONSES_EXAMPLES),
            created,
            "404",
            "502",
            "503",
            "504",
        )
        paths["/v1/responses/{response_id}"] = {
            "get": {
                "operationId": "getResponse",
                "summary": "A stored response",
                "parameters": _response_id(),
                "responses": {"200": _json("ResponseObject"), **_errors("404", "503")},
            },
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Delete a stored response",
                "parameters": _response_id(),
                "responses": {"200": _json("ResponseDeleted"), **_errors("404", "503")},
            },
        }
        paths["/v1/responses/{response_id}/input_items"] = {
            "get": {
                "operationId": "listInputItems",
                "summary": "A stored response's input items",
                "parameters": _response_id() + _input_items_query(),
                "responses": {"200": _json("InputItemList"), **_errors("400", "404", "503")},
            }
        }
    if endpoints.chat_completions.enabled or endpoints.responses.enabled:
        paths["/v1/models"] = {
            "get": {
                "operationId": "listModels",
                "summary": "The agents as models",
                "responses": {"200": _json("ModelList"), **_errors()},
            }
        }
        paths["/v1/models/{model_id}"] = {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One agent as a model",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "example": "openclaw/main",
                    }
                ],
                "responses": {"200": _json("Model"), **_errors("400", "404")},
            }
        }
        paths["/v1/embeddings"] = _post(
            "createEmbedding",
            "Embeddings from an agent's embedding model",
            _body(
                "EmbeddingsRequest",
                {
                    "strings": {"model": "openclaw", "input": ["first text", "second text"]},
                    "base64": {"model": "openclaw", "input": "a text", "encoding_format": "base64"},
                },
            ),
            _json("EmbeddingList"),
            "404",
            "502",
            "503",
            "504",
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
            "schemas": {
                **defs["$defs"],
                "ChatCompletionsSseEvent": _CHAT_SSE,
                "ResponsesSseEvent": _RESPONSES_SSE,
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The gateway token or password (modes token / password).",
                }
            },
        },
    }
