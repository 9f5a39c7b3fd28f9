"""What every model backend speaks: internal message and event types, and the Provider protocol.

These are the internal types; OpenAI/Anthropic wire shapes exist only inside each adapter and in
the HTTP endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "tool_calls", "content_filter", "aborted", "error"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image already fetched and checked: raw bytes and their MIME type."""

    mime: str
    data: bytes


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked the client to make; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI ``tool_calls`` item."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str | tuple[ContentPart, ...]
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def text(self) -> str:
        """The text of the message, image parts left out."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return not isinstance(self.content, str) and any(
            isinstance(p, ImagePart) for p in self.content
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
    # Client tools (OpenAI function definitions), passed through to models that take them.
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # True when the upstream reported none and the gateway counted (or estimated) itself.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The OpenAI ``usage`` object (also how transcripts and events carry it)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the tool call at ``index``: the first piece carries id and name, the rest
    continue its arguments (a non-streaming answer sends each call whole, in one piece)."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Finished:
    stop_reason: StopReason


ProviderEvent = TextDelta | ToolCallDelta | Usage | Finished


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

    async def aclose(self) -> None: ...
