"""The conversation types every layer shares: messages and their parts, tool calls and tool
definitions, the pieces a reply streams in, and token usage.

One copy of each: the runner, the providers, the store and the doors all speak these.  Wire
shapes (OpenAI, Anthropic, the transcript's JSON, the WebSocket's camelCase) are made from them
at the edges, never kept beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
    """A function call the model asked for; ``arguments`` is JSON text."""

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
class ToolDefinition:
    """A function a model may call: its name, what it does, its parameters' JSON Schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None
    # A client's tool exactly as it sent it (OpenAI's shape, fields this gateway does not know
    # included): what an OpenAI-compatible upstream is sent, so nothing is lost on the way.
    wire: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FunctionChoice:
    """``tool_choice`` naming the one function the model must call."""

    name: str


# "auto", "none", "required" (passed on as given), one named function, or another OpenAI
# choice object this gateway does not interpret (passed on as given where it can be).
ToolChoice = str | FunctionChoice | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str | tuple[ContentPart, ...]
    # On a tool message: the server tool that produced it (a result the client sent has none).
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
class TextDelta:
    """A piece of the reply's text, as it streams."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the tool call at ``index``: the first piece carries id and name, the rest
    continue its arguments (a non-streaming answer sends each call whole, in one piece)."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a run (or a session, summed) used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when the upstream reported none and the gateway counted (or estimated) itself.
    estimated: bool = False
    # Of the prompt tokens, those read from the provider's prompt cache; of the completion
    # tokens, those spent reasoning.  None: the upstream did not say.
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
            _plus(self.cached_tokens, other.cached_tokens),
            _plus(self.reasoning_tokens, other.reasoning_tokens),
        )

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object (also how transcripts and events carry it); the details
        only when the upstream reported them."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """From an OpenAI-shaped ``usage`` object; ValueError when it is not one."""
        prompt, completion = data.get("prompt_tokens", 0), data.get("completion_tokens", 0)
        for value in (prompt, completion):
            if not _count(value):
                raise ValueError("usage counts must be integers >= 0")
        return cls(
            prompt,
            completion,
            cached_tokens=_detail(data, "prompt_tokens_details", "cached_tokens"),
            reasoning_tokens=_detail(data, "completion_tokens_details", "reasoning_tokens"),
        )


def _plus(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _detail(data: Mapping[str, Any], group: str, name: str) -> int | None:
    details = data.get(group)
    value = details.get(name) if isinstance(details, Mapping) else None
    return value if _count(value) else None
