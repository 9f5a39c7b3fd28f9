"""Deterministic local upstream model servers for the gateway's tests and benchmarks.

``FakeUpstream`` is a real aiohttp server on 127.0.0.1 (ephemeral port), run in a background
thread with its own event loop, so sync tests (the ``openai`` sync client) and async tests (on
their own loop) can both point the gateway's providers at it.  One port serves:

* OpenAI:    ``POST /v1/chat/completions`` (stream / non-stream), ``GET /v1/models``,
             ``POST /v1/embeddings`` (deterministic vectors, see ``openai_wire.embeddings_body``)
             -> ``base_url`` = ``http://127.0.0.1:<port>/v1``
* Anthropic: ``POST /v1/messages`` (stream / non-stream)
             -> ``root_url`` = ``http://127.0.0.1:<port>`` (what the Anthropic SDK calls base_url)

Every request is recorded in ``.requests``.  What a model request gets is decided by a
*behaviour* (``Answer``, ``StreamAbort``, ``StreamError``, ``HttpError``, ``ToolCalls``,
``Drop``, ``Hang``, ``slow_stream``; documented in ``behaviours``): ``.script(b1, b2, ...)``
queues behaviours consumed one per model request (FIFO); when the queue is empty ``.default``
applies (``Answer()`` unless changed).  Requests rejected by the auth or validation checks
(401/400) and ``GET /v1/models`` do not consume the script.

Client disconnects: ``.disconnects`` lists every model response whose client went away before
it finished (``Disconnect.at`` is ``time.monotonic()``); ``wait_for_disconnect(timeout)`` blocks
for one.  The server runs with aiohttp's ``handler_cancellation=True`` so the handler is
cancelled as soon as the peer's FIN/RST arrives, even while it is sleeping (a hang, a delay
between chunks).  Connections the fake closes itself (``Drop``, ``StreamAbort``) are not
counted.

The modules: ``behaviours`` (what to answer), ``openai_wire`` / ``anthropic_wire`` (how it looks
on each API, both in the shape defined by ``wire``), ``respond`` (playing a behaviour: timing,
cut-offs, writes), ``records`` (what is recorded) and this one (the server: its thread and
loop, routing and request checks, the script, recording and waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import orjson
from aiohttp import web

from tests.upstream.anthropic_wire import ANTHROPIC

# The behaviours and records are re-exported: ``tests.upstream.server`` keeps its old names.
from tests.upstream.behaviours import (
    Answer,
    Behaviour,
    Drop,
    Hang,
    HttpError,
    StreamAbort,
    StreamError,
    ToolCalls,
    check_behaviour,
    slow_stream,
)
from tests.upstream.openai_wire import (
    EMBEDDINGS_PATH,
    MODELS_PATH,
    OPENAI,
    embeddings_body,
    models_body,
)
from tests.upstream.records import Disconnect, Headers, RecordedRequest
from tests.upstream.respond import Exchange, json_response, respond
from tests.upstream.wire import Wire

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

_WIRES: tuple[Wire, ...] = (OPENAI, ANTHROPIC)
_MODEL_PATHS = frozenset(wire.path for wire in _WIRES)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        self._default: Behaviour = Answer() if default is None else check_behaviour(default)
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
        # Set to answer every embeddings request with this error.
        self.embeddings_error: HttpError | None = None
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
        self._default = check_behaviour(behaviour)

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
    def embedding_requests(self) -> list[RecordedRequest]:
        """Only the ``/v1/embeddings`` requests."""
        return [r for r in self.requests if r.path == EMBEDDINGS_PATH]

    @property
    def disconnects(self) -> list[Disconnect]:
        """A snapshot (copy) of the client disconnects noticed so far."""
        with self._cond:
            return list(self._disconnects)

    def script(self, *behaviours: Behaviour) -> FakeUpstream:
        """Queue behaviours, consumed one per model request (FIFO)."""
        checked = [check_behaviour(b) for b in behaviours]
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

    def wait_for_disconnect(self, timeout: float = 10.0, count: int = 1) -> bool:
        """Block until ``count`` disconnects were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._disconnects) >= count, timeout)

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> bool:
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
        for wire in _WIRES:
            app.router.add_post(wire.path, self._model_handler(wire))
        app.router.add_get(MODELS_PATH, self._models)
        app.router.add_post(EMBEDDINGS_PATH, self._embeddings)
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

    def _note_disconnect(self, ex: Exchange) -> None:
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

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    # ---- request handlers -------------------------------------------------------------------

    def _unauthorized(self, wire: Wire, request: web.Request) -> web.Response | None:
        if self.api_key is None or wire.authorized(request.headers, self.api_key):
            return None
        return json_response(401, wire.error_body(wire.unauthorized()))

    def _model_handler(self, wire: Wire) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            rec = await self._record(request)
            rejected = self._unauthorized(wire, request)
            if rejected is not None:
                return rejected
            problem = wire.invalid(rec.body)
            if problem is not None:
                return json_response(problem.status, wire.error_body(problem))
            stream = rec.body.get("stream") is True
            return await self._serve(wire, Exchange(request, rec, self._next_behaviour(), stream))

        return handle

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        rejected = self._unauthorized(OPENAI, request)
        return rejected if rejected is not None else json_response(200, models_body(self.models))

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        rejected = self._unauthorized(OPENAI, request)
        if rejected is not None:
            return rejected
        if self.embeddings_error is not None:
            err = self.embeddings_error
            return json_response(err.status, OPENAI.error_body(err))
        answer = embeddings_body(rec.body)
        if answer is None:
            err = HttpError(400, "'input' is invalid.", param="input")
            return json_response(400, OPENAI.error_body(err))
        return json_response(200, answer)

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        err = HttpError(404, f"Unknown request URL: {request.method} {request.path}")
        return json_response(404, OPENAI.error_body(err))

    # ---- answering a model request ----------------------------------------------------------

    async def _serve(self, wire: Wire, ex: Exchange) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await respond(wire, ex, self.models[0], self._new_id)
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
