"""What every model backend speaks: the request, the events a call streams, and the Provider
protocol.  The message types themselves are ``openclaw.messages``; OpenAI/Anthropic wire shapes
exist only inside each adapter and in the HTTP endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openclaw.messages import (
    ChatMessage,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One call to a model: the provider's own model id, the full message list, sampling."""

    model: str
    messages: Sequence[ChatMessage]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Tools the model may call (the client's, for now), for models that take them.
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice | None = None
    # False: at most one tool call per answer (None: the model's default).
    parallel_tool_calls: bool | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    stop_reason: StopReason


ProviderEvent = TextDelta | ToolCallDelta | Usage | Finished

# What an embeddings call takes: texts, or (as OpenAI allows) token ids of the model's tokenizer.
EmbeddingInput = str | Sequence[int]


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors, one per input in order, and the prompt tokens the call used."""

    vectors: list[list[float]]
    prompt_tokens: int


class Provider(Protocol):
    """A model backend.  ``stream`` is an async generator: iterate it for events; closing it
    (``aclose`` or cancellation) closes the upstream call at once.  Errors are raised as the
    ``openclaw.errors.Upstream*`` types, translated at the adapter by type or status code."""

    name: str

    def supports_images(self, model: str) -> bool: ...

    def supports_tools(self, model: str) -> bool: ...

    def stream(
        self, request: ModelRequest, *, deltas: bool = True
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Events of one call; ``deltas=False`` lets the backend skip incremental delivery."""
        ...

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
        """Usage for a reply when the upstream reported none (tokenizer, else an estimate)."""
        ...

    async def embed(
        self, model: str, inputs: Sequence[EmbeddingInput], dimensions: int | None
    ) -> Embeddings:
        """Embeddings of ``inputs`` in one call; ``UnsupportedError`` for a provider (or a
        ``dimensions``) that cannot."""
        ...

    async def aclose(self) -> None: ...
