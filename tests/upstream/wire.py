"""The one shape both wire formats (``openai_wire``, ``anthropic_wire``) give ``server``.

A wire format is pure: it checks a request and renders replies as JSON payloads or as the
exact bytes of each write of a stream.  ``server`` does all the I/O and the timing (delays,
``StreamAbort`` / ``StreamError`` cut-offs, disconnect bookkeeping) the same way for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tests.upstream.behaviours import Answer, HttpError, StreamError, ToolCalls

__all__ = ["Frame", "JsonReply", "Reply", "StreamReply", "Wire"]


@dataclass(frozen=True)
class JsonReply:
    """A complete JSON response."""

    status: int
    payload: Any


@dataclass(frozen=True)
class Frame:
    """One write of a streamed response.

    ``content`` frames are the content chunks: counted in ``Disconnect.chunks_sent``, spaced by
    ``Answer.chunk_delay`` and cut off after ``StreamAbort.after`` / ``StreamError.after``.
    """

    data: bytes
    content: bool = True


@dataclass(frozen=True)
class StreamReply:
    """A streamed (SSE) response, write by write."""

    head: bytes  # written at once, before ``first_token_delay``
    frames: list[Frame]
    tail: list[bytes]  # the normal end (not sent after a StreamAbort / StreamError cut-off)


Reply = JsonReply | StreamReply


class Wire(Protocol):
    """One API's request checks and reply rendering."""

    path: str  # the model endpoint (POST)
    id_prefix: str  # of response ids, followed by a 12-digit counter

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        """Whether the request headers carry ``api_key`` the way this API sends it."""
        ...

    def unauthorized(self) -> HttpError:
        """The 401 for a missing / wrong key."""
        ...

    def invalid(self, body: Any) -> HttpError | None:
        """The 400 for a request body this API rejects, or None."""
        ...

    def error_body(self, error: HttpError) -> dict[str, Any]:
        """The JSON body of an error response."""
        ...

    def stream_error(self, behaviour: StreamError) -> bytes:
        """The error event ending a ``StreamError`` stream."""
        ...

    def answer(
        self, body: dict[str, Any], answer: Answer, rid: str, model: Any, stream: bool
    ) -> Reply:
        """The reply of an ``Answer`` (or ``StreamAbort`` / ``StreamError``, uncut)."""
        ...

    def tool_calls(
        self, body: dict[str, Any], calls: ToolCalls, rid: str, model: Any, stream: bool
    ) -> Reply:
        """The reply of a ``ToolCalls``."""
        ...
