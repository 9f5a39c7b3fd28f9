"""Every way an upstream can fail, on both OpenAI doors (``POST /v1/chat/completions`` and
``POST /v1/responses``, streamed and not), against the suite's own upstream (``FakeUpstream``)
and, for what it cannot do (a TCP reset, arbitrary bytes), a raw scripted one (``RawUpstream``):

(a) a connection reset before the first byte is retried (``maxRetries``), else it is a 502;
(b) a reset in the middle of a stream ends it the door's way (chat: an error event then
    ``data: [DONE]``; Responses: ``response.failed``), the partial turn is stored and the
    gateway keeps serving;
(c) a stream that stalls past the provider's ``timeoutSeconds`` ends with an upstream timeout
    (the stream's error event, or a 504 before it started), never a hang;
(d) malformed SSE (garbage lines, invalid JSON, events of the wrong shape) is a clean 502 before
    the response started or the stream's error event after: never a 500, nothing malformed
    relayed, no traceback;
(e) a 200 that is not what was asked for (a non-JSON body for a plain call, an HTML page for a
    stream) is a 502 that says so.

Every error body is OpenAI's ``{"error": {message, type, param, code}}``.  Nothing sleeps to
synchronise: the tests wait on the upstreams' records or on what the gateway has sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import chat_config, transcripts, wait_for
from tests.e2e.rawhttp import Reply, request
from tests.harness import RunningGateway
from tests.openai_spec import conforms
from tests.upstream import Answer, Drop, FakeUpstream, StreamAbort

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
DOORS = pytest.mark.parametrize("door", [CHAT, RESPONSES], ids=["chat", "responses"])
STREAMED = pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
QUESTION = "a b c d"
USER = "faults"  # a stored session (a transcript file): where a failed turn can be looked at
ECHO = "Echo: a b c d"  # FakeUpstream's answer to QUESTION (and RawUpstream's good answers)


# --- a raw scripted upstream ---------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """What ``RawUpstream`` answers one request with: ``data`` (the whole response, status line
    and headers included), then ``end``: ``"close"`` (FIN), ``"reset"`` (RST: SO_LINGER 0) or
    ``"stall"`` (send nothing more until the client goes away).  With ``gate``, the end waits
    for that event first (so a test can let a reset happen once it has seen what came before)."""

    data: bytes = b""
    end: str = "close"
    gate: threading.Event | None = None


class RawUpstream:
    """A scripted HTTP/1.1 server on 127.0.0.1 (own thread and loop) that answers each request
    with the bytes of the next ``Raw`` (a 500 when the script is empty), one connection per
    request.  ``base_url`` is an OpenAI-style base URL for a provider's ``baseUrl``."""

    def __init__(self) -> None:
        self._script: deque[Raw] = deque()
        self._cond = threading.Condition()
        self.requests: list[bytes] = []  # the request heads, in arrival order
        self.gone = 0  # stalled answers whose client went away
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Raw) -> None:
        with self._cond:
            self._script.extend(steps)

    def wait_for_requests(self, count: int, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def wait_for_gone(self, count: int = 1, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.gone >= count, timeout)

    def __enter__(self) -> RawUpstream:
        self._thread.start()

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            with self._cond:
                self.requests.append(head)
                step = self._script.popleft() if self._script else Raw(http(500, b"{}"))
                self._cond.notify_all()
            writer.write(step.data)
            await writer.drain()
            if step.gate is not None:
                await asyncio.to_thread(step.gate.wait, 30)
            if step.end == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if step.end == "stall":
                while await reader.read(65536):
                    pass
                with self._cond:
                    self.gone += 1
                    self._cond.notify_all()
            writer.close()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            self._tasks.discard(task)


def http(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    """A whole response with a Content-Length, closing its connection."""
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n"
)


def chunked(*events: bytes) -> bytes:
    """SSE events in chunked framing (one chunk each), without the terminating chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)


def sse(events: list[bytes], *, done: bool = True) -> bytes:
    """A whole chunked event stream of ``events`` (``data:`` payloads), ``[DONE]`` if asked."""
    data = [b"data: " + e + b"\n\n" for e in events] + ([b"data: [DONE]\n\n"] if done else [])
    return SSE_HEAD + chunked(*data) + b"0\r\n\r\n"


def delta(content: str | None = None, finish: str | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish}
    if content is not None:
        choice["delta"]["content"] = content
    return orjson.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})


def words(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]]


def good_stream(text: str = ECHO) -> bytes:
    return sse([delta(w) for w in words(text)] + [delta(finish="stop")])


def good_json(text: str = ECHO) -> bytes:
    message = {"role": "assistant", "content": text}
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m"}
    body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    return http(200, orjson.dumps(body))


def good(stream: bool) -> Raw:
    return Raw(good_stream() if stream else good_json())


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as up:
        yield up


# --- the gateway and its replies -----------------------------------------------------------------


class ErrorLog(logging.Handler):
    """ERROR records of the gateway (a handler on the ``openclaw`` logger itself: it may not
    propagate to the root logger); a traceback there means a fault escaped its translation."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [self.format(r) for r in self.records]


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("openclaw")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    assert handler.lines() == [], "the gateway logged errors"


def faults_config(up: Any, **provider: Any) -> dict[str, Any]:
    """Both doors on, the provider pointed at ``up`` (either upstream)."""
    cfg = chat_config(up, provider=provider)
    cfg["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    return cfg


@pytest.fixture
def start(gateway_factory: Callable[..., RunningGateway]) -> Callable[..., RunningGateway]:
    def start_gateway(up: Any, **provider: Any) -> RunningGateway:
        provider.setdefault("maxRetries", 0)
        return gateway_factory(faults_config(up, **provider))

    return start_gateway


def request_body(door: str, text: str, *, stream: bool, user: str | None = None) -> dict:
    body: dict[str, Any] = {"model": "openclaw", "stream": stream}
    if door == CHAT:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["input"] = text
    if user is not None:
        body["user"] = user
    return body


def post(
    gw: RunningGateway, door: str, text: str = QUESTION, *, stream: bool, user: str | None = None
) -> Reply:
    return request(
        gw.port,
        "POST",
        door,
        body=orjson.dumps(request_body(door, text, stream=stream, user=user)),
        headers={**gw.auth_headers(), "Content-Type": "application/json"},
        timeout=30,
    )


def post_until(gw: RunningGateway, door: str, marker: bytes, then: Callable[[], None]) -> Reply:
    """A streamed request read as it arrives: ``then()`` once ``marker`` has come, then the
    rest."""
    body = request_body(door, QUESTION, stream=True, user=USER)
    with httpx.stream(
        "POST", gw.url + door, json=body, headers=gw.auth_headers(), timeout=30
    ) as res:
        got = b""
        fired = False
        for piece in res.iter_bytes():
            got += piece
            if not fired and marker in got:
                fired = True
                then()
        assert fired, got
        return Reply(res.status_code, res.headers, got)  # type: ignore[arg-type]


def assert_error(
    reply: Reply, status: int, *, code: str | None = None, contains: str | None = None
) -> dict[str, Any]:
    """An OpenAI error response: JSON ``{"error": {message, type, param, code}}``."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    conforms(body, "ErrorResponse")
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if contains is not None:
        assert contains in err["message"], err
    assert b"Traceback" not in reply.body
    return err


def chat_events(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


def responses_events(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.strip().split(b"\n\n"):
        lines = block.split(b"\n")
        kind = next(line[7:] for line in lines if line.startswith(b"event: "))
        data = orjson.loads(next(line[6:] for line in lines if line.startswith(b"data: ")))
        assert data["type"] == kind.decode()
        events.append(data)
    return events


def chat_text(events: list[bytes]) -> str:
    """The content of chat completion chunks (each checked against OpenAI's schema)."""
    text = ""
    for raw_event in events:
        chunk = orjson.loads(raw_event)
        conforms(chunk, "CreateChatCompletionStreamResponse")
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return text


def answer_text(door: str, reply: Reply, *, stream: bool) -> str:
    """The text of a successful answer on either door, streamed or not."""
    assert reply.status == 200, reply.body
    if not stream:
        body = reply.json()
        if door == CHAT:
            return str(body["choices"][0]["message"]["content"])
        assert body["status"] == "completed"
        return "".join(
            part["text"] for item in body["output"] if item["type"] == "message"
            for part in item["content"]
        )  # fmt: skip
    if door == CHAT:
        events = chat_events(reply.body)
        assert events[-1] == b"[DONE]"
        return chat_text(events[:-1])
    events_ = responses_events(reply.body)
    assert events_[-1]["type"] == "response.completed"
    return "".join(e["delta"] for e in events_ if e["type"] == "response.output_text.delta")


def assert_stream_failed(
    door: str, reply: Reply, *, code: str | None = None, contains: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(the text streamed before the failure, the error) of a stream that failed after it had
    started: chat completions end with an error event then ``data: [DONE]``; the Responses API
    with ``response.failed`` (its error object is ``{code, message}`` from OpenAI's fixed set of
    codes, so the gateway's own ``code`` is only checked on the chat door)."""
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "text/event-stream"
    assert b"Traceback" not in reply.body
    if door == CHAT:
        events = chat_events(reply.body)
        assert events[-1] == b"[DONE]"
        error_event = orjson.loads(events[-2])
        conforms(error_event, "ErrorResponse")
        error = error_event["error"]
        assert set(error) == {"message", "type", "param", "code"}
        if code is not None:
            assert error["code"] == code, error
        text = chat_text(events[:-2])
    else:
        assert b"[DONE]" not in reply.body
        events_ = responses_events(reply.body)
        for event in events_:
            conforms(event, "ResponseStreamEvent")
        assert [e["sequence_number"] for e in events_] == list(range(len(events_)))
        failed = events_[-1]
        assert failed["type"] == "response.failed"
        assert failed["response"]["status"] == "failed"
        error = failed["response"]["error"]
        assert set(error) == {"code", "message"}
        text = "".join(e["delta"] for e in events_ if e["type"] == "response.output_text.delta")
    if contains is not None:
        assert contains in error["message"], error
    return text, error


def stored_replies(gw: RunningGateway, count: int = 1) -> list[dict[str, Any]]:
    """The assistant records of every stored turn, once ``count`` are there (failed and
    aborted turns are written in the background)."""

    def replies() -> list[dict[str, Any]]:
        found = [r for t in transcripts(gw.state_dir) for r in t if r["role"] == "assistant"]
        return found if len(found) >= count else []

    found = wait_for(replies, timeout=10)
    assert found, transcripts(gw.state_dir)
    return found


# --- (a) a connection reset before the first byte -----------------------------------------------

RESET_BEFORE = pytest.mark.parametrize("fault", ["close", "reset"], ids=["fin", "rst"])


def _fault_before(fault: str, upstream: FakeUpstream, raw: RawUpstream) -> tuple[Any, Callable]:
    """(the upstream to configure, a function scripting ``n`` faults then a good answer)."""
    if fault == "close":
        # FakeUpstream's Drop: the request is read, the connection closed without a byte.
        return upstream, lambda n, stream: upstream.script(*[Drop()] * n)

    def script(n: int, stream: bool) -> None:
        raw.script(*[Raw(end="reset")] * n, good(stream))

    return raw, script


def _requests(up: Any) -> int:
    return len(up.model_requests) if isinstance(up, FakeUpstream) else len(up.requests)


@RESET_BEFORE
@DOORS
@STREAMED
def test_a_reset_before_the_first_byte_is_retried_then_answers(
    start, upstream: FakeUpstream, raw: RawUpstream, fault: str, door: str, stream: bool
) -> None:
    up, script = _fault_before(fault, upstream, raw)
    gw = start(up, maxRetries=2)
    script(2, stream)
    reply = post(gw, door, stream=stream)
    assert answer_text(door, reply, stream=stream) == ECHO
    assert _requests(up) == 3


@RESET_BEFORE
@DOORS
@STREAMED
def test_a_reset_before_the_first_byte_without_retries_is_502(
    request, start, upstream, raw: RawUpstream, fault: str, door: str, stream: bool, errors
) -> None:
    up, script = _fault_before(fault, upstream, raw)
    gw = start(up, maxRetries=0)
    script(1, stream)
    assert_error(post(gw, door, stream=stream), 502, code="upstream_unavailable")
    assert _requests(up) == 1
    # Not sticky: the next request is answered.
    assert answer_text(door, post(gw, door, stream=stream), stream=stream) == ECHO


# --- (b) a reset in the middle of a stream --------------------------------------------------------


@pytest.mark.parametrize("fault", ["close", "reset"], ids=["fin", "rst"])
@DOORS
def test_a_reset_mid_stream_fails_the_stream_and_keeps_the_partial_turn(
    start, upstream: FakeUpstream, raw: RawUpstream, fault: str, door: str, errors
) -> None:
    partial = "Echo: a "
    if fault == "close":
        # Two content chunks, then the connection closed without the chunked terminator.
        gw = start(upstream)
        upstream.script(StreamAbort(after=2))
        reply = post(gw, door, stream=True, user=USER)
    else:
        # Two content chunks, then (once the gateway has relayed them) a TCP reset.
        gw = start(raw)
        gate = threading.Event()
        events = [delta("Echo: "), delta("a ")]
        raw.script(
            Raw(SSE_HEAD + chunked(*[b"data: " + e + b"\n\n" for e in events]), "reset", gate)
        )
        marker = b'"content":"a "' if door == CHAT else b'"delta":"a "'
        reply = post_until(gw, door, marker, gate.set)
    text, error = assert_stream_failed(
        door, reply, code="upstream_unavailable", contains="closed the connection"
    )
    assert text == partial
    assert error["message"].startswith("fake/fake-model: ")

    [stored] = stored_replies(gw)
    assert stored["stopReason"] == "error"
    assert stored["content"] == partial
    assert stored["meta"]["error"]["type"] == "upstream_error"

    # The gateway keeps serving: the next request (streamed and not) is answered in full.
    if fault == "reset":
        raw.script(good(True), good(False))
    assert answer_text(door, post(gw, door, stream=True), stream=True) == ECHO
    assert answer_text(door, post(gw, door, stream=False), stream=False) == ECHO


@pytest.mark.parametrize("end", ["close", "reset"], ids=["fin", "rst"])
@DOORS
def test_a_reset_in_the_middle_of_a_plain_answer_is_502(
    start, raw: RawUpstream, end: str, door: str, errors
) -> None:
    gw = start(raw)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    raw.script(Raw(head + b'{"id": "x", "choices": [{"mess', end))
    assert_error(post(gw, door, stream=False), 502, contains="closed the connection")
    raw.script(good(False))
    assert answer_text(door, post(gw, door, stream=False), stream=False) == ECHO


# --- (c) a stream that stalls past the provider's timeout ---------------------------------------

TIMEOUT = 1.5  # the provider's timeoutSeconds in these tests (room for a loaded machine)
STALL = 60.0  # how long the upstream would stall: far past TIMEOUT and the client's timeout


@DOORS
def test_a_stream_stalled_after_some_chunks_ends_with_an_upstream_timeout(
    start, upstream: FakeUpstream, door: str, errors
) -> None:
    gw = start(upstream, timeoutSeconds=TIMEOUT)
    # "Echo: " goes out at once, then nothing for a minute.
    upstream.script(Answer(chunk_delay=STALL))
    began = time.monotonic()
    reply = post(gw, door, stream=True, user=USER)
    assert time.monotonic() - began < STALL / 3  # ended by the timeout, not by the upstream
    text, error = assert_stream_failed(door, reply, code="upstream_timeout", contains="in time")
    assert text == "Echo: "
    if door == CHAT:
        assert error["type"] == "upstream_error"
    # The gateway closed its upstream call.
    assert upstream.wait_for_disconnect(timeout=10)
    [stored] = stored_replies(gw)
    assert (stored["stopReason"], stored["content"]) == ("error", "Echo: ")
    assert stored["meta"]["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("where", ["first-token", "mid-body"])
@DOORS
@STREAMED
def test_a_stall_before_the_answer_started_is_504(
    request, start, upstream, raw: RawUpstream, where: str, door: str, stream: bool, errors
) -> None:
    """Nothing relayed yet (a stream not started, a plain answer's body cut short): a 504."""
    if where == "first-token":
        gw = start(upstream, timeoutSeconds=TIMEOUT)
        # Streamed: the headers and the role chunk, then silence; plain: no answer at all.
        upstream.script(Answer(first_token_delay=STALL))
        gone = upstream.wait_for_disconnect
    else:
        gw = start(raw, timeoutSeconds=TIMEOUT)
        if stream:
            start_of = SSE_HEAD + chunked(b"data: " + delta("") + b"\n\n")
        else:
            start_of = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            start_of += b'Content-Length: 400\r\n\r\n{"id": "x", "choi'
        raw.script(Raw(start_of, "stall"))
        gone = raw.wait_for_gone
    began = time.monotonic()
    reply = post(gw, door, stream=stream)
    assert time.monotonic() - began < STALL / 3
    assert_error(reply, 504, code="upstream_timeout", contains="did not answer in time")
    assert gone(timeout=10)


# --- (d) malformed event streams -----------------------------------------------------------------

BAD_EVENTS = {
    "invalid-json": b"data: {not json\n\n",
    "json-truncated": b'data: {"choices": [{"delta": {"content": "x"\n\n',
    "choice-not-object": b'data: {"choices": ["oops"]}\n\n',
    "delta-not-object": b'data: {"choices": [{"delta": 5}]}\n\n',
    "choices-not-list": b'data: {"choices": 5}\n\n',
    "content-number": b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
    "content-list": b'data: {"choices": [{"delta": {"content": ["x"]}}]}\n\n',
    "content-object": b'data: {"choices": [{"delta": {"content": {"text": "x"}}}]}\n\n',
    "finish-list": b'data: {"choices": [{"delta": {}, "finish_reason": ["stop"]}]}\n\n',
    "call-index-text": (
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": "x", "id": "c", '
        b'"function": {"name": "f", "arguments": ""}}]}}]}\n\n'
    ),
    "call-name-number": (
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", '
        b'"function": {"name": 5, "arguments": ""}}]}}]}\n\n'
    ),
    "call-arguments-object": (
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", '
        b'"function": {"name": "f", "arguments": {"city": "Paris"}}}]}}]}\n\n'
    ),
    "garbage-then-eof": b"this is not an event stream\n<html>oops</html>\n\n",
}


@pytest.mark.parametrize("bad", list(BAD_EVENTS))
@pytest.mark.parametrize("after", [False, True], ids=["first", "after-text"])
@DOORS
def test_malformed_events_are_a_clean_error(
    request, start, raw: RawUpstream, bad: str, after: bool, door: str, errors
) -> None:
    gw = start(raw)
    before = [b"data: " + delta("Echo: ") + b"\n\n"] if after else []
    # The bad event, then what would have followed it: the stream goes no further.
    rest = [] if bad == "garbage-then-eof" else [b"data: " + delta("more") + b"\n\n"]
    raw.script(Raw(SSE_HEAD + chunked(*before, BAD_EVENTS[bad], *rest) + b"0\r\n\r\n"))
    reply = post(gw, door, stream=True)
    expected = "ended early" if bad == "garbage-then-eof" else "malformed event from the upstream"
    if after:
        text, _ = assert_stream_failed(door, reply, contains=expected)
        assert text == "Echo: "
    else:
        assert_error(reply, 502, contains=expected)
    assert b"more" not in reply.body
    # Nothing is stuck: the next request is answered.
    raw.script(good(True))
    assert answer_text(door, post(gw, door, stream=True), stream=True) == ECHO


@DOORS
def test_garbage_lines_between_events_are_ignored_as_sse_says(
    start, raw: RawUpstream, door: str, errors
) -> None:
    """Lines that are no SSE field are skipped (the SSE spec); the events around them count."""
    events = [
        b": a comment\n\n",
        b"garbage without a colon\n\n",
        b"data: " + delta("Echo: ") + b"\nnonsense: field\n\n",
        b"<html>\n\n",
        b"data: " + delta("a b c d") + b"\n\n",
        b"data: " + delta(finish="stop") + b"\n\n",
        b"data: [DONE]\n\n",
    ]
    gw = start(raw)
    raw.script(Raw(SSE_HEAD + chunked(*events) + b"0\r\n\r\n"))
    assert answer_text(door, post(gw, door, stream=True), stream=True) == ECHO


def anthropic_event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


ANTHROPIC_START = [
    anthropic_event(
        {
            "type": "message_start",
            "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
                        "model": "x", "usage": {"input_tokens": 3, "output_tokens": 1}},
        }
    ),
    anthropic_event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ),
    anthropic_event(
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Echo: "}}
    ),
]  # fmt: skip
TOOL_START = {"type": "tool_use", "id": "toolu_0", "name": "f", "input": {}}
BAD_ANTHROPIC_EVENTS = {
    "invalid-json": [b"event: content_block_delta\ndata: {not json\n\n"],
    "text-number": [
        anthropic_event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}
        )
    ],
    "tool-id-number": [
        anthropic_event(
            {"type": "content_block_start", "index": 1, "content_block": {**TOOL_START, "id": 5}}
        )
    ],
    "partial-json-object": [
        anthropic_event({"type": "content_block_start", "index": 1, "content_block": TOOL_START}),
        anthropic_event(
            {"type": "content_block_delta", "index": 1,
             "delta": {"type": "input_json_delta", "partial_json": {"city": "Paris"}}}
        ),
    ],
    "stop-reason-list": [
        anthropic_event({"type": "message_delta", "delta": {"stop_reason": ["end_turn"]}})
    ],
    "usage-text": [
        anthropic_event(
            {"type": "message_delta", "delta": {}, "usage": {"output_tokens": "many"}}
        )
    ],
}  # fmt: skip


@pytest.mark.parametrize("bad", list(BAD_ANTHROPIC_EVENTS))
@DOORS
@STREAMED
def test_malformed_anthropic_events_are_a_clean_error(
    start, raw: RawUpstream, bad: str, door: str, stream: bool, errors
) -> None:
    """The same on the Anthropic provider (always streamed from the upstream): after the first
    text, a plain request is a 502, a streamed one ends with the stream's error event."""
    gw = start(raw, api="anthropic-messages", baseUrl=f"http://127.0.0.1:{raw.port}")
    events = [*ANTHROPIC_START, *BAD_ANTHROPIC_EVENTS[bad]]
    raw.script(Raw(SSE_HEAD + chunked(*events) + b"0\r\n\r\n"))
    reply = post(gw, door, stream=stream)
    if stream:
        text, _ = assert_stream_failed(door, reply, contains="malformed event from the upstream")
        assert text == "Echo: "
    else:
        assert_error(reply, 502, contains="malformed event from the upstream")


BAD_BODIES = {
    "not-an-object": b"[1, 2, 3]",
    "no-choices": b'{"id": "x", "choices": []}',
    "message-null": b'{"choices": [{"message": null, "finish_reason": "stop"}]}',
    "content-number": b'{"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}',
    "finish-list": b'{"choices": [{"message": {"content": "x"}, "finish_reason": ["stop"]}]}',
    "call-arguments-object": (
        b'{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c", "type": '
        b'"function", "function": {"name": "f", "arguments": {}}}]}, '
        b'"finish_reason": "tool_calls"}]}'
    ),
    "call-without-function": (
        b'{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c"}]}, '
        b'"finish_reason": "tool_calls"}]}'
    ),
}


@pytest.mark.parametrize("bad", list(BAD_BODIES))
@DOORS
def test_a_plain_answer_of_the_wrong_shape_is_502(
    start, raw: RawUpstream, bad: str, door: str, errors
) -> None:
    gw = start(raw)
    raw.script(Raw(http(200, BAD_BODIES[bad])))
    assert_error(post(gw, door, stream=False), 502, contains="malformed response from the upstream")


# --- (e) a 200 that is not what was asked for ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"definitely not json", "text/plain"),
        (b"<html><body><h1>Sign in</h1></body></html>", "text/html"),
        (b'{"choices": [{"message": {"content": "x"}', "application/json"),
    ],
    ids=["text", "html", "truncated-json"],
)
@DOORS
def test_a_plain_call_answered_with_non_json_is_502(
    start, raw: RawUpstream, body: bytes, content_type: str, door: str, errors
) -> None:
    gw = start(raw)
    raw.script(Raw(http(200, body, content_type)))
    reply = post(gw, door, stream=False)
    err = assert_error(reply, 502, contains="malformed response from the upstream")
    assert err["type"] == "upstream_error"
    assert b"Sign in" not in reply.body


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body><h1>Sign in</h1></body></html>", "text/html"),
        (b'{"choices": [{"message": {"content": "x"}}]}', "application/json"),
    ],
    ids=["html", "json"],
)
@DOORS
def test_a_stream_answered_with_a_page_is_502_saying_so(
    request, start, raw: RawUpstream, body: bytes, content_type: str, door: str, errors
) -> None:
    gw = start(raw)
    raw.script(Raw(http(200, body, content_type)))
    reply = post(gw, door, stream=True)
    err = assert_error(reply, 502, contains=f"answered with {content_type}, not an event stream")
    assert err["type"] == "upstream_error"
    assert b"Sign in" not in reply.body
