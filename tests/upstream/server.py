"""Deterministic local upstream model servers for the gateway's tests and benchmarks.

``FakeUpstream`` is a real aiohttp server on 127.0.0.1 (ephemeral port), run in a background
thread with its own event loop, so sync tests (the ``openai`` sync client) and async tests (on
their own loop) can both point the gateway's providers at it.  One port serves:

* OpenAI:    ``POST /v1/chat/completions`` (stream / non-stream), ``GET /v1/models``
             -> ``base_url`` = ``http://127.0.0.1:<port>/v1``
* Anthropic: ``POST /v1/messages`` (stream / non-stream)
             -> ``root_url`` = ``http://127.0.0.1:<port>`` (what the Anthropic SDK calls base_url)

Every request is recorded in ``.requests``.  What a model request gets is decided by a
*behaviour*: ``.script(b1, b2, ...)`` queues behaviours consumed one per model request (FIFO);
when the queue is empty ``.default`` applies (``Answer()`` unless changed).  Requests rejected by
the auth or validation checks (401/400) and ``GET /v1/models`` do not consume the script.

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
    llama.cpp's server ignoring include_usage).
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
    of calls + words of ``text``; never truncated by ``max_tokens``.
    OpenAI non-streaming: ``message = {"role": "assistant", "content": text or None,
    "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}, ...]}``,
    ``finish_reason: "tool_calls"``.  Streaming: the role chunk (``content`` ``""`` with text,
    else null), the text's word chunks, then per call one chunk ``{"tool_calls": [{"index": i,
    "id", "type": "function", "function": {"name", "arguments": ""}}]}`` followed by the
    arguments in up to 3 pieces ``{"tool_calls": [{"index": i, "function": {"arguments":
    piece}}]}``; then the empty-delta ``finish_reason: "tool_calls"`` chunk, the usage chunk
    (with include_usage) and ``[DONE]``.
    Anthropic: a text block (if ``text``) then ``{"type": "tool_use", "id", "name", "input":
    <parsed arguments>}`` blocks, ``stop_reason: "tool_use"`` (a non-streaming request whose
    arguments are not a JSON object gets a 500).  Streaming: per block ``content_block_start``
    (tool_use with ``input: {}``), ``content_block_delta`` events (``text_delta`` per word /
    ``{"type": "input_json_delta", "partial_json": piece}``), ``content_block_stop``; then
    ``message_delta`` (``stop_reason: "tool_use"``) and ``message_stop``.
    The request's ``tools`` / ``tool_choice`` are simply in the recorded body.
``Drop()``
    Close the connection without any response.
``Hang()``
    Never answer (until the client goes away or the server stops).

Client disconnects: ``.disconnects`` lists every model response whose client went away before
it finished (``Disconnect.at`` is ``time.monotonic()``); ``wait_for_disconnect(timeout)`` blocks
for one.  The server runs with aiohttp's ``handler_cancellation=True`` so the handler is
cancelled as soon as the peer's FIN/RST arrives, even while it is sleeping (a hang, a delay
between chunks).  Connections the fake closes itself (``Drop``, ``StreamAbort``) are not
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web

__all__ = [
    "Answer",
    "Behaviour",
    "Disconnect",
    "Drop",
    "FakeUpstream",
    "Hang",
    "Headers",
    "HttpError",
    "RecordedRequest",
    "StreamAbort",
    "StreamError",
    "ToolCalls",
    "running_upstream",
    "slow_stream",
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


_OPENAI_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to sample from this model.",
    404: "The model does not exist.",
    429: "Rate limit reached for requests.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
    529: "Overloaded",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _openai_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "invalid_request_error" if status < 500 else "server_error"


def _anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


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

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self._message(),
                "type": self.type or _openai_type(self.status),
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": self.type or _anthropic_type(self.status),
                "message": self._message(),
            },
        }

    def _message(self) -> str:
        if self.message is not None:
            return self.message
        return _OPENAI_DEFAULT_MESSAGES.get(self.status, f"HTTP {self.status}")


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


# --------------------------------------------------------------------------------------------
# Records


class Headers(dict[str, str]):
    """Request headers: keys stored lower-cased, lookups case-insensitive."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    index: int
    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any  # parsed JSON, or None when empty / not JSON
    raw: bytes
    at: float  # time.monotonic() when the body had been read


@dataclass(frozen=True)
class Disconnect:
    """A model response whose client went away before it finished."""

    path: str
    request_index: int
    stream: bool
    chunks_sent: int  # content chunks written before the disconnect was noticed
    behaviour: Behaviour
    at: float  # time.monotonic() when the server noticed


# --------------------------------------------------------------------------------------------
# Helpers for the deterministic answers

_WORDS = re.compile(r"\s*\S+\s*")
_TEXT_TYPES = frozenset({"text", "input_text"})
_IMAGE_TYPES = frozenset({"image_url", "image", "input_image"})


def _split_words(text: str) -> list[str]:
    """Each word with its following whitespace; joining the pieces gives ``text`` back."""
    pieces = _WORDS.findall(text)
    return pieces if pieces or not text else [text]


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


def _count_words(messages: list[Any], system: Any = None) -> int:
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


def _split_arguments(arguments: str) -> list[str]:
    """Tool-call arguments in 3 pieces (fewer when shorter than 3 characters, none if empty)."""
    n = min(3, len(arguments))
    return [arguments[len(arguments) * k // n : len(arguments) * (k + 1) // n] for k in range(n)]


def _limit(body: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: bytes, payload: Any) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class _Exchange:
    """Per-request state shared by a handler and its disconnect bookkeeping."""

    __slots__ = ("behaviour", "chunks", "record", "request", "resp", "self_closed", "stream")

    def __init__(
        self, request: web.Request, record: RecordedRequest, behaviour: Behaviour, stream: bool
    ) -> None:
        self.request = request
        self.record = record
        self.behaviour = behaviour
        self.stream = stream
        self.resp: web.StreamResponse | None = None
        self.chunks = 0
        self.self_closed = False

    def close_connection(self) -> None:
        """Close the TCP connection ourselves (flushing what was written, nothing more)."""
        self.self_closed = True
        transport = self.request.transport
        if transport is not None:
            transport.close()

    async def write(self, data: bytes) -> None:
        assert self.resp is not None
        await self.resp.write(data)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


# --------------------------------------------------------------------------------------------
# The server


class FakeUpstream:
    """OpenAI- and Anthropic-compatible fake model server on one port; see the module docstring."""

    HOST: ClassVar[str] = "127.0.0.1"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default: Behaviour | None = None,
        models: tuple[str, ...] = ("fake-model",),
        port: int = 0,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self.api_key = api_key
        self.models = models
        self._default: Behaviour = Answer() if default is None else _check(default)
        self._want_port = port
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._cond = threading.Condition()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[Disconnect] = []
        self._index = itertools.count()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._error: BaseException | None = None
        self.port = 0

    # ---- public, thread-safe API ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>``; the Anthropic endpoint is ``root_url + "/v1/messages"``."""
        if not self.port:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://{self.HOST}:{self.port}"

    @property
    def default(self) -> Behaviour:
        return self._default

    @default.setter
    def default(self, behaviour: Behaviour) -> None:
        self._default = _check(behaviour)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (copy) of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def model_requests(self) -> list[RecordedRequest]:
        """Only the chat-completions / messages requests."""
        return [r for r in self.requests if r.path in _MODEL_PATHS]

    @property
    def disconnects(self) -> list[Disconnect]:
        """A snapshot (copy) of the client disconnects noticed so far."""
        with self._cond:
            return list(self._disconnects)

    def script(self, *behaviours: Behaviour) -> FakeUpstream:
        """Queue behaviours, consumed one per model request (FIFO)."""
        checked = [_check(b) for b in behaviours]
        with self._cond:
            self._script.extend(checked)
        return self

    def pending(self) -> int:
        """Number of scripted behaviours not consumed yet."""
        with self._cond:
            return len(self._script)

    def reset(self) -> None:
        """Forget requests, disconnects and the script (the default behaviour is kept)."""
        with self._cond:
            self._requests.clear()
            self._disconnects.clear()
            self._script.clear()

    def wait_for_disconnect(self, timeout: float = 1.0, count: int = 1) -> bool:
        """Block until ``count`` disconnects were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._disconnects) >= count, timeout)

    def wait_for_requests(self, count: int = 1, timeout: float = 1.0) -> bool:
        """Block until ``count`` requests were received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        self._stopping = False
        self._error = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="FakeUpstream", daemon=True
        )
        self._thread.start()
        ready.wait(30)
        if self._error is not None or not self.port:
            self._thread.join(30)
            self._thread = None
            raise RuntimeError(f"FakeUpstream failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        if thread.is_alive():
            raise RuntimeError("FakeUpstream thread did not stop")
        self._thread = None
        self._loop = None
        self.port = 0

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ---- thread / loop management -----------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = self._loop_factory()
        self._loop = loop
        try:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            else:
                ready.set()
                loop.run_forever()
            finally:
                loop.run_until_complete(self._astop())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                ready.set()

    async def _astart(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # handler_cancellation: without it aiohttp never cancels a handler whose client went
        # away; a sleeping handler (Hang, delays) would not notice at all.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.HOST, self._want_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _astop(self) -> None:
        self._stopping = True
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        if rest:
            await asyncio.wait(rest, timeout=5)

    # ---- recording --------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        headers = Headers()
        for k, v in request.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        with self._cond:
            rec = RecordedRequest(
                index=next(self._index),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=headers,
                body=body,
                raw=raw,
                at=time.monotonic(),
            )
            self._requests.append(rec)
            self._cond.notify_all()
        return rec

    def _next_behaviour(self) -> Behaviour:
        with self._cond:
            return self._script.popleft() if self._script else self._default

    def _note_disconnect(self, ex: _Exchange) -> None:
        if ex.self_closed or self._stopping:
            return
        with self._cond:
            self._disconnects.append(
                Disconnect(
                    path=ex.record.path,
                    request_index=ex.record.index,
                    stream=ex.stream,
                    chunks_sent=ex.chunks,
                    behaviour=ex.behaviour,
                    at=time.monotonic(),
                )
            )
            self._cond.notify_all()

    async def _serve(
        self,
        ex: _Exchange,
        respond: Callable[[_Exchange], Any],
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            resp: web.StreamResponse = await respond(ex)
            return resp
        except asyncio.CancelledError:
            # handler_cancellation: the peer closed the connection (or the server is stopping).
            self._note_disconnect(ex)
            raise
        except ConnectionResetError:
            # A write hit the closed transport before the cancellation arrived.
            self._note_disconnect(ex)
            # aiohttp's finish_response() then fails quietly on the closed transport.
            return ex.resp if ex.resp is not None else web.Response()
        finally:
            self._tasks.discard(task)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    # ---- shared behaviour handling ----------------------------------------------------------

    async def _common(
        self, ex: _Exchange, error_body: Callable[[HttpError], dict[str, Any]]
    ) -> web.StreamResponse | None:
        """Handle the behaviours that are the same on both APIs; None means 'answer'."""
        b = ex.behaviour
        if isinstance(b, HttpError):
            return _json(b.status, error_body(b), b.headers)
        if isinstance(b, Drop):
            ex.close_connection()
            return web.Response()  # never sent: the transport is closing
        if isinstance(b, Hang):
            await _forever()
        if isinstance(b, ToolCalls):
            return None
        assert isinstance(b, Answer)
        if not ex.stream:
            if b.first_token_delay > 0:
                await asyncio.sleep(b.first_token_delay)
            if isinstance(b, StreamAbort):
                ex.close_connection()
                return web.Response()
            if isinstance(b, StreamError):
                err = HttpError(500, b.message, type=b.type, code=b.code)
                return _json(500, error_body(err))
        return None

    async def _start_stream(self, ex: _Exchange) -> None:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        ex.resp = resp
        await resp.prepare(ex.request)

    @staticmethod
    def _fail_at(b: Answer) -> int | None:
        return b.after if isinstance(b, (StreamAbort, StreamError)) else None

    # ---- OpenAI -----------------------------------------------------------------------------

    def _openai_auth_ok(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        )

    async def _openai_models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if not self._openai_auth_ok(request):
            return _json(401, HttpError.unauthorized().openai_body())
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return _json(200, {"object": "list", "data": data})

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if not self._openai_auth_ok(request):
            return _json(401, HttpError.unauthorized().openai_body())
        body = rec.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            err = HttpError(400, "'messages' is a required property", param="messages")
            return _json(400, err.openai_body())
        ex = _Exchange(request, rec, self._next_behaviour(), body.get("stream") is True)
        return await self._serve(ex, self._openai_respond)

    async def _openai_respond(self, ex: _Exchange) -> web.StreamResponse:
        early = await self._common(ex, HttpError.openai_body)
        if early is not None:
            return early
        b = ex.behaviour
        if isinstance(b, ToolCalls):
            return await self._openai_tool_calls(ex, b)
        assert isinstance(b, Answer)
        body: dict[str, Any] = ex.record.body
        messages: list[Any] = body["messages"]
        model = body.get("model") or self.models[0]
        pieces = _split_words(b.text if b.text is not None else _echo(messages))
        finish = "stop"
        limit = _limit(body, "max_completion_tokens", "max_tokens")
        if limit is not None and limit < len(pieces):
            pieces, finish = pieces[: max(limit, 0)], "length"
        prompt_tokens = _count_words(messages)
        cid = self._new_id("chatcmpl-fake")
        created = int(time.time())

        if not ex.stream:
            out: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(pieces)},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
            }
            if not b.no_usage:
                out["usage"] = _openai_usage(prompt_tokens, len(pieces))
            return _json(200, out)

        options = body.get("stream_options")
        include_usage = (
            isinstance(options, dict) and options.get("include_usage") is True and not b.no_usage
        )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                c["usage"] = None
            return _sse(c)

        await self._start_stream(ex)
        await ex.write(chunk({"role": "assistant", "content": ""}))
        if b.first_token_delay > 0:
            await asyncio.sleep(b.first_token_delay)
        fail_at = self._fail_at(b)
        for i, piece in enumerate(pieces):
            if i == fail_at:
                break
            if i and b.chunk_delay > 0:
                await asyncio.sleep(b.chunk_delay)
            await ex.write(chunk({"content": piece}))
            ex.chunks += 1
        if isinstance(b, StreamAbort):
            ex.close_connection()
            return ex.resp  # type: ignore[return-value]
        if isinstance(b, StreamError):
            err = HttpError(500, b.message, type=b.type, code=b.code)
            await ex.write(_sse(err.openai_body()))
        else:
            await ex.write(chunk({}, finish))
            if include_usage:
                usage = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _openai_usage(prompt_tokens, ex.chunks),
                }
                await ex.write(_sse(usage))
            await ex.write(b"data: [DONE]\n\n")
        assert ex.resp is not None
        await ex.resp.write_eof()
        return ex.resp

    async def _openai_tool_calls(self, ex: _Exchange, b: ToolCalls) -> web.StreamResponse:
        body: dict[str, Any] = ex.record.body
        model = body.get("model") or self.models[0]
        words = _split_words(b.text) if b.text else []
        prompt_tokens = _count_words(body["messages"])
        completion_tokens = len(b.calls) + len(words)
        cid = self._new_id("chatcmpl-fake")
        created = int(time.time())

        if not ex.stream:
            calls = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for i, (name, arguments) in enumerate(b.calls)
            ]
            message = {"role": "assistant", "content": b.text or None, "tool_calls": calls}
            out: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": _openai_usage(prompt_tokens, completion_tokens),
            }
            return _json(200, out)

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                c["usage"] = None
            return _sse(c)

        await self._start_stream(ex)
        await ex.write(chunk({"role": "assistant", "content": "" if words else None}))
        for word in words:
            await ex.write(chunk({"content": word}))
            ex.chunks += 1
        for i, (name, arguments) in enumerate(b.calls):
            first = {
                "index": i,
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            await ex.write(chunk({"tool_calls": [first]}))
            ex.chunks += 1
            for piece in _split_arguments(arguments):
                await ex.write(
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                )
                ex.chunks += 1
        await ex.write(chunk({}, "tool_calls"))
        if include_usage:
            usage: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _openai_usage(prompt_tokens, completion_tokens),
            }
            await ex.write(_sse(usage))
        await ex.write(b"data: [DONE]\n\n")
        assert ex.resp is not None
        await ex.resp.write_eof()
        return ex.resp

    # ---- Anthropic --------------------------------------------------------------------------

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            err = HttpError(401, "invalid x-api-key")
            return _json(401, err.anthropic_body())
        body = rec.body
        problem = None
        if not isinstance(body, dict):
            problem = "request body must be a JSON object"
        elif not isinstance(body.get("messages"), list):
            problem = "messages: Field required"
        elif _limit(body, "max_tokens") is None:
            problem = "max_tokens: Field required"
        if problem is not None:
            return _json(400, HttpError(400, problem).anthropic_body())
        assert isinstance(body, dict)
        ex = _Exchange(request, rec, self._next_behaviour(), body.get("stream") is True)
        return await self._serve(ex, self._anthropic_respond)

    async def _anthropic_respond(self, ex: _Exchange) -> web.StreamResponse:
        early = await self._common(ex, HttpError.anthropic_body)
        if early is not None:
            return early
        b = ex.behaviour
        if isinstance(b, ToolCalls):
            return await self._anthropic_tool_calls(ex, b)
        assert isinstance(b, Answer)
        body: dict[str, Any] = ex.record.body
        messages: list[Any] = body["messages"]
        model = body.get("model") or self.models[0]
        pieces = _split_words(b.text if b.text is not None else _echo(messages))
        stop = "end_turn"
        limit = _limit(body, "max_tokens")
        if limit is not None and limit < len(pieces):
            pieces, stop = pieces[: max(limit, 0)], "max_tokens"
        input_tokens = _count_words(messages, body.get("system"))
        mid = self._new_id("msg_fake")

        if not ex.stream:
            out: dict[str, Any] = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "".join(pieces)}],
                "stop_reason": stop,
                "stop_sequence": None,
            }
            if not b.no_usage:
                out["usage"] = {"input_tokens": input_tokens, "output_tokens": len(pieces)}
            return _json(200, out)

        message: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if not b.no_usage:
            message["usage"] = {"input_tokens": input_tokens, "output_tokens": 1}
        await self._start_stream(ex)
        await ex.write(
            _event(b"message_start", {"type": "message_start", "message": message})
            + _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            + _event(b"ping", {"type": "ping"})
        )
        if b.first_token_delay > 0:
            await asyncio.sleep(b.first_token_delay)
        fail_at = self._fail_at(b)
        for i, piece in enumerate(pieces):
            if i == fail_at:
                break
            if i and b.chunk_delay > 0:
                await asyncio.sleep(b.chunk_delay)
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            await ex.write(_event(b"content_block_delta", delta))
            ex.chunks += 1
        if isinstance(b, StreamAbort):
            ex.close_connection()
            return ex.resp  # type: ignore[return-value]
        if isinstance(b, StreamError):
            err = HttpError(500, b.message, type=b.type or "overloaded_error", code=b.code)
            await ex.write(_event(b"error", err.anthropic_body()))
        else:
            message_delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
            }
            if not b.no_usage:
                message_delta["usage"] = {"output_tokens": ex.chunks}
            await ex.write(
                _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
                + _event(b"message_delta", message_delta)
                + _event(b"message_stop", {"type": "message_stop"})
            )
        assert ex.resp is not None
        await ex.resp.write_eof()
        return ex.resp

    async def _anthropic_tool_calls(self, ex: _Exchange, b: ToolCalls) -> web.StreamResponse:
        body: dict[str, Any] = ex.record.body
        model = body.get("model") or self.models[0]
        words = _split_words(b.text) if b.text else []
        input_tokens = _count_words(body["messages"], body.get("system"))
        output_tokens = len(b.calls) + len(words)
        mid = self._new_id("msg_fake")

        if not ex.stream:
            content: list[dict[str, Any]] = [{"type": "text", "text": b.text}] if b.text else []
            for i, (name, arguments) in enumerate(b.calls):
                try:
                    parsed = orjson.loads(arguments)
                except orjson.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, dict):
                    err = HttpError(500, f"ToolCalls: arguments of {name!r} are not a JSON object")
                    return _json(500, err.anthropic_body())
                content.append(
                    {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": parsed}
                )
            out: dict[str, Any] = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
            return _json(200, out)

        message: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        await self._start_stream(ex)
        await ex.write(_event(b"message_start", {"type": "message_start", "message": message}))
        index = 0

        async def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
            nonlocal index
            head = {"type": "content_block_start", "index": index, "content_block": start}
            await ex.write(
                _event(b"content_block_start", head)
                + (_event(b"ping", {"type": "ping"}) if index == 0 else b"")
            )
            for delta in deltas:
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                await ex.write(_event(b"content_block_delta", event))
                ex.chunks += 1
            stop = {"type": "content_block_stop", "index": index}
            await ex.write(_event(b"content_block_stop", stop))
            index += 1

        if words:
            await block(
                {"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in words]
            )
        for i, (name, arguments) in enumerate(b.calls):
            await block(
                {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": piece}
                    for piece in _split_arguments(arguments)
                ],
            )
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
        await ex.write(
            _event(b"message_delta", message_delta)
            + _event(b"message_stop", {"type": "message_stop"})
        )
        assert ex.resp is not None
        await ex.resp.write_eof()
        return ex.resp

    # ---- anything else ----------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        err = HttpError(404, f"Unknown request URL: {request.method} {request.path}")
        return _json(404, err.openai_body())


_MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/messages"})


def _openai_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _check(behaviour: Any) -> Behaviour:
    if not isinstance(behaviour, _BEHAVIOUR_TYPES):
        raise TypeError(f"not a FakeUpstream behaviour: {behaviour!r}")
    return behaviour


@contextlib.contextmanager
def running_upstream(**kwargs: Any) -> Iterator[FakeUpstream]:
    """``with running_upstream(api_key=...) as up:`` -- a started FakeUpstream, stopped after.

    In a fixture::

        @pytest.fixture
        def upstream():
            with running_upstream() as up:
                yield up
    """
    server = FakeUpstream(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
