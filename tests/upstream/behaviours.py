"""What ``FakeUpstream`` answers: the scripted behaviours, and the text logic both APIs share.

A behaviour decides what one model request gets (``FakeUpstream.script`` / ``.default``, see
``server``).  How each answer looks on the wire is in ``openai_wire`` and ``anthropic_wire``.

Behaviours (frozen dataclasses):

``Answer(text=None, first_token_delay=0, chunk_delay=0, no_usage=False)``
    The normal answer: ``"Echo: " + <text of the last user message>`` (text parts of a content
    array joined with a space, plus ``" [images: N]"`` if it has image parts), or ``text``.
    When the last message is a tool result -- OpenAI: a ``role: "tool"`` message; Anthropic: a
    user message with ``tool_result`` blocks -- it is ``"Echo: tool " + <its text>`` instead
    (the last tool_result block's text; text parts joined with a space).
    Streaming sends one SSE event per word (the word with its following whitespace); headers and
    the role chunk (OpenAI) / ``message_start`` (Anthropic) go out at once, then
    ``first_token_delay``, then the content chunks ``chunk_delay`` apart.  Non-streaming waits
    ``first_token_delay`` before answering.  ``max_completion_tokens``/``max_tokens`` smaller
    than the number of words truncates to that many words with ``finish_reason`` ``"length"``
    (Anthropic ``stop_reason`` ``"max_tokens"``).  Usage: prompt tokens = whitespace-separated
    words of all message texts (and the Anthropic ``system``), completion tokens = words sent.
    OpenAI streams report usage (a final ``choices: []`` chunk) only with
    ``stream_options.include_usage``; ``no_usage=True`` never reports usage, anywhere (like
    llama.cpp's server ignoring include_usage).  ``cached_tokens`` / ``reasoning_tokens`` add
    usage details (OpenAI: ``prompt_tokens_details`` / ``completion_tokens_details``; Anthropic:
    ``cache_read_input_tokens`` on top of the prompt's words).
``slow_stream(chunks=200, delay=0.05)``
    An ``Answer`` of ``chunks`` words ``delay`` seconds apart (for disconnect tests).
``StreamAbort(after=1, ...Answer fields)``
    Stream ``after`` content chunks, then close the TCP connection (no final chunk, no
    ``[DONE]``, no chunked-encoding terminator).  A non-streaming request is dropped unanswered.
``StreamError(after=1, message=..., type=None, code=None, ...Answer fields)``
    Stream ``after`` content chunks, then an error event and end the response (no ``[DONE]``):
    OpenAI ``data: {"error": {...}}``; Anthropic ``event: error`` with
    ``{"type": "error", "error": {...}}``.  A non-streaming request gets a 500 error instead.
``HttpError(status=500, message=None, type=None, code=None, param=None, headers={})``
    An error response in the OpenAI (``{"error": {message, type, param, code}}``) or Anthropic
    (``{"type": "error", "error": {type, message}}``) format.  ``type=None`` picks the usual type
    for the status on each API.  Constructors: ``HttpError.context_length_exceeded()``,
    ``.unauthorized()``, ``.rate_limited(retry_after=1)``, ``.server_error()``,
    ``.unavailable()``, ``.overloaded()``.
``ToolCalls(calls=(("get_weather", '{"city": "Paris"}'),), text=None)``
    Answer with tool calls: ``calls`` is ``((function_name, arguments_json), ...)``; ``text`` is
    optional content sent before them.  Call ``i`` (0-based) has the id ``"call_<i>"`` (OpenAI) /
    ``"toolu_<i>"`` (Anthropic), in every response.  Usage: completion/output tokens = number
    of calls + words of ``text``; never truncated by ``max_tokens``.  Streamed, the arguments
    go out in up to 3 pieces.  The exact shapes on each API are documented in ``openai_wire``
    and ``anthropic_wire``.  The request's ``tools`` / ``tool_choice`` are simply in the
    recorded body.
``Drop()``
    Close the connection without any response.
``Hang()``
    Never answer (until the client goes away or the server stops).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Answer",
    "Behaviour",
    "Drop",
    "Hang",
    "HttpError",
    "StreamAbort",
    "StreamError",
    "ToolCalls",
    "answer_pieces",
    "check_behaviour",
    "count_words",
    "int_field",
    "slow_stream",
    "split_arguments",
    "split_words",
]


# --------------------------------------------------------------------------------------------
# Behaviours


@dataclass(frozen=True)
class Answer:
    """A normal answer (the default behaviour); see the module docstring."""

    text: str | None = None
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0
    no_usage: bool = False
    # Usage details to report (OpenAI: prompt/completion_tokens_details; Anthropic:
    # cache_read_input_tokens, added to the input tokens as OpenAI counts them).
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class StreamAbort(Answer):
    """Stream ``after`` content chunks, then close the connection abruptly."""

    after: int = 1


@dataclass(frozen=True)
class StreamError(Answer):
    """Stream ``after`` content chunks, then an SSE error event, then end the response."""

    after: int = 1
    message: str = "The server had an error while processing your request."
    type: str | None = None
    code: str | None = None

    def http_error(self, default_type: str | None = None) -> HttpError:
        """The error this behaviour reports (a 500; ``default_type`` when ``type`` is unset)."""
        return HttpError(500, self.message, type=self.type or default_type, code=self.code)


# Default messages per status, on both APIs.
_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to sample from this model.",
    404: "The model does not exist.",
    429: "Rate limit reached for requests.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
    529: "Overloaded",
}


@dataclass(frozen=True)
class HttpError:
    """An HTTP error response; ``type``/``message`` default per status and API."""

    status: int = 500
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def context_length_exceeded(
        cls, max_context: int = 8192, prompt_tokens: int = 9000
    ) -> HttpError:
        return cls(
            400,
            f"This model's maximum context length is {max_context} tokens. However, your "
            f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the "
            "messages.",
            type="invalid_request_error",
            code="context_length_exceeded",
            param="messages",
        )

    @classmethod
    def unauthorized(cls) -> HttpError:
        return cls(401, code="invalid_api_key")

    @classmethod
    def rate_limited(cls, retry_after: float = 1) -> HttpError:
        value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return cls(429, code="rate_limit_exceeded", headers={"Retry-After": value})

    @classmethod
    def server_error(cls) -> HttpError:
        return cls(500)

    @classmethod
    def unavailable(cls) -> HttpError:
        return cls(503)

    @classmethod
    def overloaded(cls) -> HttpError:
        """Anthropic's 529."""
        return cls(529, "Overloaded", type="overloaded_error")

    def message_text(self) -> str:
        """``message``, or the usual message for the status."""
        if self.message is not None:
            return self.message
        return _DEFAULT_MESSAGES.get(self.status, f"HTTP {self.status}")


@dataclass(frozen=True)
class ToolCalls:
    """Answer with tool calls ``((name, arguments_json), ...)``; see the module docstring."""

    calls: tuple[tuple[str, str], ...] = (("get_weather", '{"city": "Paris"}'),)
    text: str | None = None

    def __post_init__(self) -> None:
        calls = tuple(tuple(c) for c in self.calls)
        if not all(len(c) == 2 and all(isinstance(x, str) for x in c) for c in calls):
            raise TypeError(f"ToolCalls.calls must be (name, arguments_json) pairs: {self.calls!r}")
        object.__setattr__(self, "calls", calls)

    def words(self) -> list[str]:
        """The stream pieces of ``text`` (none without text)."""
        return split_words(self.text) if self.text else []

    def completion_tokens(self) -> int:
        return len(self.calls) + len(self.words())


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection without sending any response."""


@dataclass(frozen=True)
class Hang:
    """Never answer (sleep until the client disconnects or the server stops)."""


Behaviour = Answer | ToolCalls | HttpError | Drop | Hang
_BEHAVIOUR_TYPES = (Answer, ToolCalls, HttpError, Drop, Hang)


def slow_stream(chunks: int = 200, delay: float = 0.05, **kw: Any) -> Answer:
    """An answer of ``chunks`` one-word chunks sent ``delay`` seconds apart."""
    return Answer(text=" ".join(f"w{i}" for i in range(chunks)), chunk_delay=delay, **kw)


def check_behaviour(behaviour: Any) -> Behaviour:
    """``behaviour`` itself, or TypeError when it is not one."""
    if not isinstance(behaviour, _BEHAVIOUR_TYPES):
        raise TypeError(f"not a FakeUpstream behaviour: {behaviour!r}")
    return behaviour


# --------------------------------------------------------------------------------------------
# The deterministic answer text and token counts (the same on both APIs)

_WORDS = re.compile(r"\s*\S+\s*")
_TEXT_TYPES = frozenset({"text", "input_text"})
_IMAGE_TYPES = frozenset({"image_url", "image", "input_image"})


def split_words(text: str) -> list[str]:
    """Each word with its following whitespace; joining the pieces gives ``text`` back."""
    pieces = _WORDS.findall(text)
    return pieces if pieces or not text else [text]


def split_arguments(arguments: str) -> list[str]:
    """Tool-call arguments in 3 pieces (fewer when shorter than 3 characters, none if empty)."""
    n = min(3, len(arguments))
    return [arguments[len(arguments) * k // n : len(arguments) * (k + 1) // n] for k in range(n)]


def _texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind in _TEXT_TYPES and isinstance(part.get("text"), str):
                    yield part["text"]
                elif kind == "tool_result":
                    yield from _texts(part.get("content"))


def count_words(messages: list[Any], system: Any = None) -> int:
    """Prompt tokens: whitespace-separated words of all message texts (and ``system``)."""
    n = sum(len(t.split()) for t in _texts(system))
    for m in messages:
        if isinstance(m, dict):
            n += sum(len(t.split()) for t in _texts(m.get("content")))
    return n


def _tool_result_echo(last: Any) -> str | None:
    """``"Echo: tool ..."`` when the last message is a tool result (either API), else None."""
    if not isinstance(last, dict):
        return None
    content = last.get("content")
    if last.get("role") == "tool":
        return "Echo: tool " + " ".join(_texts(content))
    if last.get("role") == "user" and isinstance(content, list):
        results = [p for p in content if isinstance(p, dict) and p.get("type") == "tool_result"]
        if results:
            return "Echo: tool " + " ".join(_texts(results[-1].get("content")))
    return None


def _echo(messages: list[Any]) -> str:
    tool = _tool_result_echo(messages[-1]) if messages else None
    if tool is not None:
        return tool
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if not isinstance(content, list):
                return "Echo: " + (content if isinstance(content, str) else "")
            parts = [p for p in content if isinstance(p, dict)]
            text = " ".join(
                p["text"]
                for p in parts
                if p.get("type") in _TEXT_TYPES and isinstance(p.get("text"), str)
            )
            images = sum(1 for p in parts if p.get("type") in _IMAGE_TYPES)
            return "Echo: " + text + (f" [images: {images}]" if images else "")
    return "Echo: "


def answer_pieces(answer: Answer, messages: list[Any], limit: int | None) -> tuple[list[str], bool]:
    """The stream pieces of an ``Answer`` (``text`` or the echo), cut to ``limit`` words.

    The flag says whether they were cut (``"length"`` / ``"max_tokens"``).
    """
    pieces = split_words(answer.text if answer.text is not None else _echo(messages))
    if limit is not None and limit < len(pieces):
        return pieces[: max(limit, 0)], True
    return pieces, False


def int_field(body: Mapping[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` whose value is an integer (not a bool), else None."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
