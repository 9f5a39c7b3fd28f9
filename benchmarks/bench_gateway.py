"""End-to-end gateway benchmark: added latency, streaming TTFT, throughput, stored sessions.

Run: ``.venv/bin/python benchmarks/bench_gateway.py [--quick]`` (about 2 minutes; ``--quick``
about 20 s).  Everything listens on 127.0.0.1; every server is its own process:

* ``upstream``  a minimal deterministic OpenAI-compatible server (httptools + uvloop, this file
                with ``--serve upstream``): replies at once with a small fixed completion,
                streaming (chunked SSE) or not;
* ``hop``       a bare aiohttp pass-through on uvloop (``--serve hop``): reads the body, POSTs
                it to the upstream with one pooled ``aiohttp.ClientSession``, returns the reply;
* gateways      ``openclaw gateway run`` with a temp config and state dir:
                ``gw``      stateless requests, ``OPENCLAW_LOG_LEVEL=warning``;
                ``gw-info`` the same with info-level access logs (written to a file);
                ``gw-1k``   ``user`` set, 1,000 stored sessions in the index;
                ``gw-100k`` ``user`` set, 100,000 stored sessions in the index.

Stateful requests cycle over 1,000 users whose sessions are stored before the gateways start,
each with a transcript of ``HISTORY_MESSAGES`` records (also the agents' ``maxHistoryMessages``),
so every such request reads and resends the same amount of history however long the run is.

The client (this process): sequential requests on one keep-alive connection for latency and
TTFT (a raw-socket HTTP/1.1 client, so its own cost is tiny and the same for every target), and
32 keep-alive connections on uvloop for throughput.  Targets are measured in interleaved rounds
so that machine noise hits baseline and gateway alike.  Server CPU per request is read from
``/proc/<pid>/stat`` (a steadier figure than wall-clock rates on a noisy machine) and includes
work the server deferred: after each load the client waits until the server is idle again
("settle"), and the *sustained* rate (requests / (load time + settle time)) is the one judged,
so background work (transcript writes) cannot make the gateway look faster than it is.

Results: a table on stdout and ``benchmarks/results/latest.json``.  Related tools:
``profile_gateway.py`` (py-spy under load), ``ablate_gateway.py`` with ``gw_variant.py``
(what each per-request cost is worth end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "latest.json"
TOKEN = "bench-token-0123456789abcdef"
UPSTREAM_MODEL = "bench-model"
PROVIDER = "bench"
PROMPT = "Say hello to the benchmark."
STATE_SIZES = (1_000, 100_000)
USER_POOL = 1_000  # stateful requests cycle over the first USER_POOL stored sessions
HISTORY_MESSAGES = 8  # agents.defaults.maxHistoryMessages; pool sessions start with this many
CONNECTIONS = 32
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets (see the module docstring of the task): added p50 latency, added TTFT, throughput
# ratio to the bare hop, and "flat" stored-session cost, judged with a noise tolerance.
TARGET_ADDED_LATENCY_MS = 0.5
TARGET_ADDED_TTFT_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.5
FLAT_TOLERANCE = 1.15  # 100k/1k p50 latency at most this, throughput at least its inverse


# ============================================================================================
# Servers run as child processes (``--serve upstream|hop``)

_WORDS = ("Hello", " from", " the", " bench", " upstream.")
_CONTENT = "".join(_WORDS)


def _upstream_replies() -> tuple[bytes, bytes, bytes]:
    """(non-streaming response, streaming response, streaming response with usage)."""
    import orjson

    usage = {"prompt_tokens": 5, "completion_tokens": len(_WORDS), "total_tokens": 10}
    body = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": UPSTREAM_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _CONTENT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )
    plain = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }

    def framed(events: list[bytes]) -> bytes:
        out = [
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        ]
        for ev in events:
            out.append(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def sse(obj: Any) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    events = [sse(chunk({"role": "assistant", "content": ""}))]
    events += [sse(chunk({"content": w})) for w in _WORDS]
    events.append(sse(chunk({}, "stop")))
    with_usage = [*events, sse({**chunk({}), "choices": [], "usage": usage})]
    done = b"data: [DONE]\n\n"
    return plain, framed([*events, done]), framed([*with_usage, done])


def serve_upstream() -> None:
    """A fixed-answer OpenAI-compatible upstream on a raw asyncio protocol (httptools)."""
    import httptools
    import orjson
    import uvloop

    plain, streamed, streamed_usage = _upstream_replies()
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body: list[bytes] = []
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                assert self.transport is not None
                self.transport.close()

        def on_message_begin(self) -> None:
            self.url = b""
            self.body = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            assert self.transport is not None
            if not self.url.startswith(b"/v1/chat/completions"):
                reply = not_found
            else:
                try:
                    req = orjson.loads(b"".join(self.body))
                except orjson.JSONDecodeError:
                    req = None
                if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
                    reply = bad
                elif req.get("stream") is True:
                    opts = req.get("stream_options")
                    usage = isinstance(opts, dict) and opts.get("include_usage") is True
                    reply = streamed_usage if usage else streamed
                else:
                    reply = plain
            self.transport.write(reply)
            if not self.parser.should_keep_alive():
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, HOST, 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_hop(upstream_port: int) -> None:
    """The bare aiohttp pass-through hop the gateway's throughput is judged against."""
    import aiohttp
    import uvloop
    from aiohttp import web

    url = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    fwd_headers = {"Content-Type": "application/json"}
    holder: dict[str, aiohttp.ClientSession] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with holder["s"].post(url, data=body, headers=fwd_headers) as up:
            if up.content_type == "text/event-stream":
                resp = web.StreamResponse(status=up.status)
                resp.content_type = "text/event-stream"
                await resp.prepare(request)
                async for data in up.content.iter_any():
                    await resp.write(data)
                await resp.write_eof()
                return resp
            data = await up.read()
            return web.Response(body=data, status=up.status, content_type=up.content_type)

    async def main() -> None:
        holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# ============================================================================================
# Process management


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads)."""
        with open(f"/proc/{self.popen.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn_ready(name: str, args: list[str], timeout: float = 30.0) -> Proc:
    """Start a child that prints ``READY <port>`` once listening."""
    popen = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stdout], [], [], 0.2)
        if ready:
            line = popen.stdout.readline()
            break
        if popen.poll() is not None:
            break
    if not line.startswith(b"READY "):
        popen.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return Proc(name, popen, int(line.split()[1]))


def gateway_config(upstream_port: int, port: int) -> dict[str, Any]:
    return {
        "gateway": {
            "port": port,
            "bind": "loopback",
            "auth": {"mode": "token", "token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "models": {
            "providers": {
                PROVIDER: {
                    "api": "openai-completions",
                    "baseUrl": f"http://{HOST}:{upstream_port}/v1",
                    "apiKey": "upstream-key",
                    "maxRetries": 0,
                    "models": [{"id": UPSTREAM_MODEL}],
                }
            }
        },
        "agents": {
            "defaults": {
                "model": f"{PROVIDER}/{UPSTREAM_MODEL}",
                "maxHistoryMessages": HISTORY_MESSAGES,
            }
        },
    }


def bench_user(i: int) -> str:
    return f"bench-user-{i}"


async def prefill(state_dir: Path, size: int, *, seed_history: bool = True) -> int:
    """``size`` stored (non-ephemeral, so never pruned) sessions keyed as ``user`` requests are;
    the first ``USER_POOL`` (the ones the benchmark talks to) get a transcript of
    ``HISTORY_MESSAGES`` records, so every stateful request sees the same, full history budget
    from the first request on (a steady state, whatever the number of requests)."""
    from openclaw.sessions import SessionEntry, SqliteSessionStore, TranscriptRecord, user_key

    now = time.time()
    async with SqliteSessionStore(state_dir) as store:
        for lo in range(0, size, 20_000):
            await store.import_entries(
                SessionEntry(
                    key=user_key("main", bench_user(i)),
                    session_id=f"00000000-0000-4000-8000-{i:012d}",
                    agent_id="main",
                    created_at=now - i,
                    updated_at=now - i,
                    model=f"{PROVIDER}/{UPSTREAM_MODEL}",
                    prompt_tokens=10,
                    completion_tokens=5,
                    ephemeral=False,
                )
                for i in range(lo, min(lo + 20_000, size))
            )
        if seed_history:
            for i in range(min(USER_POOL, size)):
                entry = await store.get(user_key("main", bench_user(i)))
                assert entry is not None
                records = [
                    TranscriptRecord(
                        role="user" if k % 2 == 0 else "assistant",
                        content=PROMPT if k % 2 == 0 else _CONTENT,
                        timestamp=now,
                    )
                    for k in range(HISTORY_MESSAGES)
                ]
                await store.append(entry, records, model=None, usage=None)
        return await store.count()


async def count_sessions(state_dir: Path) -> int:
    from openclaw.sessions import SqliteSessionStore

    async with SqliteSessionStore(state_dir) as store:
        return await store.count()


def openclaw_bin() -> str:
    exe = Path(sys.executable).with_name("openclaw")
    if exe.exists():
        return str(exe)
    found = shutil.which("openclaw")
    if found is None:
        raise RuntimeError("the `openclaw` command is not installed in this environment")
    return found


def spawn_gateway(
    name: str,
    tmp: Path,
    upstream_port: int,
    *,
    log_level: str = "warning",
    variants: Sequence[str] = (),
    source: Path | None = None,
) -> Proc:
    """``openclaw gateway run`` on a free port; with ``variants``, through ``gw_variant.py``
    (what-if changes for cost attribution, see there); with ``source``, the ``openclaw``
    package of that tree (``--compare``) in this environment."""
    port = free_port()
    home = tmp / name
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    cfg = home / "openclaw.json"
    cfg.write_text(json.dumps(gateway_config(upstream_port, port)))
    log_path = home / "gateway.log"
    env = {
        **os.environ,
        "OPENCLAW_STATE_DIR": str(state),
        "OPENCLAW_LOG_LEVEL": log_level,
        "OPENCLAW_CONFIG_PATH": str(cfg),
    }
    for var in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"):
        env.pop(var, None)
    command = [openclaw_bin()]
    if source is not None:
        command = [sys.executable, "-m", "openclaw"]
        env["PYTHONPATH"] = str(source)
    if variants:
        command = [sys.executable, str(HERE / "gw_variant.py")]
        env["OPENCLAW_BENCH_VARIANTS"] = ",".join(variants)
        env["OPENCLAW_BENCH_PROFILE"] = str(home / "gateway.prof")
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            [*command, "gateway", "run", "--port", str(port), "--config", str(cfg)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    proc = Proc(name, popen, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        try:
            with contextlib.closing(Conn(port)) as conn:
                status, _, _ = conn.request(build_request("GET", "/health", None, port))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not become healthy: {log_path.read_text()[-2000:]}")


# ============================================================================================
# Requests


def build_request(
    method: str, path: str, body: bytes | None, port: int, auth: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chat_body(model: str, *, stream: bool = False, user: str | None = None) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    if user is not None:
        body["user"] = user
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Target:
    """Where a series of requests goes and what they look like."""

    name: str
    port: int
    model: str  # "openclaw" for gateways, the upstream's model for direct / hop
    stateful: bool = False
    proc: Proc | None = None
    _i: int = 0
    _pool: list[bytes] = field(default_factory=list)

    def requests(self, *, stream: bool = False) -> Callable[[], bytes]:
        """A supplier of request bytes; stateful targets cycle over the user pool."""
        if not self.stateful:
            req = build_request(
                "POST", "/v1/chat/completions", chat_body(self.model, stream=stream), self.port
            )
            return lambda: req
        if not self._pool:
            self._pool = [
                build_request(
                    "POST",
                    "/v1/chat/completions",
                    chat_body(self.model, user=bench_user(i)),
                    self.port,
                )
                for i in range(USER_POOL)
            ]

        def nxt() -> bytes:
            req = self._pool[self._i % USER_POOL]
            self._i += 1
            return req

        return nxt


# ============================================================================================
# Sequential client (latency, TTFT)

CONTENT_MARKER = b'"delta":{"content":"'


class Conn:
    """A blocking HTTP/1.1 keep-alive connection that parses just enough of a response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(262_144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while (j := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:j])
        del self.buf[: j + 2]
        return line

    def request(self, req: bytes, marker: bytes | None = None) -> tuple[int, bytes, float | None]:
        """(status, body, perf_counter() when ``marker`` was first seen in the body)."""
        self.sock.sendall(req)
        buf = self.buf
        while (i := buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(buf[:i]).lower()
        del buf[: i + 4]
        status = int(head[9:12])
        seen: float | None = None
        cl = head.find(b"\r\ncontent-length:")
        if cl >= 0:
            end = head.find(b"\r\n", cl + 2)
            n = int(head[cl + 17 : end if end >= 0 else None])
            while len(buf) < n:
                self._fill()
            body = bytes(buf[:n])
            del buf[:n]
            if marker is not None and marker in body:
                seen = time.perf_counter()
            return status, body, seen
        if b"transfer-encoding: chunked" not in head:
            raise RuntimeError(f"unsupported response framing: {head!r}")
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers, then the empty line
                    pass
                break
            while len(buf) < size + 2:
                self._fill()
            data = bytes(buf[:size])
            del buf[: size + 2]
            if marker is not None and seen is None and marker in data:
                seen = time.perf_counter()
            parts.append(data)
        return status, b"".join(parts), seen


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples: Sequence[float], cpu: Sequence[float] = ()) -> dict[str, float]:
    extra = {"server_cpu_us_per_req": round(statistics.fmean(cpu) * 1e6, 1)} if cpu else {}
    return {
        **extra,
        "n": len(samples),
        "p50_ms": round(pct(samples, 50) * 1000, 4),
        "p95_ms": round(pct(samples, 95) * 1000, 4),
        "p99_ms": round(pct(samples, 99) * 1000, 4),
        "mean_ms": round(statistics.fmean(samples) * 1000, 4) if samples else float("nan"),
    }


def sequential(
    targets: Sequence[Target],
    *,
    stream: bool,
    rounds: int,
    per_round: int,
    warmup: int,
    time_budget: float,
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds of sequential requests; per target the total times and TTFTs (s)."""
    conns = {t.name: Conn(t.port) for t in targets}
    makers = {t.name: t.requests(stream=stream) for t in targets}
    out: dict[str, dict[str, list[float]]] = {
        t.name: {"total": [], "ttft": [], "cpu": []} for t in targets
    }
    marker = CONTENT_MARKER if stream else None
    try:
        for t in targets:
            for _ in range(warmup):
                status, body, _ = conns[t.name].request(makers[t.name](), marker)
                if status != 200:
                    raise RuntimeError(f"{t.name}: HTTP {status}: {body[:300]!r}")
        deadline = time.monotonic() + time_budget
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for t in order:
                conn, make, res = conns[t.name], makers[t.name], out[t.name]
                if t.proc is not None:
                    settle(t.proc, 10.0)  # the previous target's deferred work is not ours
                    cpu0 = t.proc.cpu_seconds()
                for _ in range(per_round):
                    req = make()
                    t0 = time.perf_counter()
                    status, body, seen = conn.request(req, marker)
                    t1 = time.perf_counter()
                    if status != 200:
                        raise RuntimeError(f"{t.name}: HTTP {status}: {body[:300]!r}")
                    res["total"].append(t1 - t0)
                    if stream:
                        if seen is None:
                            raise RuntimeError(f"{t.name}: no content delta in {body[:300]!r}")
                        res["ttft"].append(seen - t0)
                if t.proc is not None:
                    # Including the work this round's requests left behind.
                    settle(t.proc, 10.0)
                    res["cpu"].append((t.proc.cpu_seconds() - cpu0) / per_round)
            if time.monotonic() > deadline:
                break
    finally:
        for c in conns.values():
            c.close()
    return out


# ============================================================================================
# Concurrent client (throughput)


class _LoadRun:
    def __init__(self, make: Callable[[], bytes], total: int, duration: float) -> None:
        self.make = make
        self.total = total
        self.deadline = time.perf_counter() + duration
        self.issued = 0
        self.done = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.open = 0
        self.finished: asyncio.Future[None] | None = None

    def more(self) -> bool:
        return self.issued < self.total and time.perf_counter() < self.deadline


class _LoadConn(asyncio.Protocol):
    """One keep-alive connection: send, read one content-length response, send the next."""

    def __init__(self, run: _LoadRun) -> None:
        self.run = run
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.open += 1
        self._send()

    def _send(self) -> None:
        run = self.run
        assert self.transport is not None
        if not run.more():
            self.transport.close()
            return
        run.issued += 1
        req = run.make()
        self.t0 = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i]).lower()
            del buf[: i + 4]
            self.status = int(head[9:12])
            cl = head.find(b"\r\ncontent-length:")
            if cl < 0:
                self.run.errors += 1
                assert self.transport is not None
                self.transport.close()
                return
            end = head.find(b"\r\n", cl + 2)
            self.need = int(head[cl + 17 : end if end >= 0 else None])
        if len(buf) < self.need:
            return
        del buf[: self.need]
        self.need = -1
        run = self.run
        run.done += 1
        run.latencies.append(time.perf_counter() - self.t0)
        if self.status != 200:
            run.errors += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.open -= 1
        if self.need >= 0 or exc is not None:
            run.errors += 1
        if run.open == 0 and run.finished is not None and not run.finished.done():
            run.finished.set_result(None)


async def _load(port: int, make: Callable[[], bytes], total: int, duration: float) -> _LoadRun:
    loop = asyncio.get_running_loop()
    run = _LoadRun(make, total, duration)
    run.finished = loop.create_future()
    await asyncio.gather(
        *(loop.create_connection(lambda: _LoadConn(run), HOST, port) for _ in range(CONNECTIONS))
    )
    await asyncio.wait_for(run.finished, duration + 30)
    return run


def settle(proc: Proc, limit: float = 60.0) -> float:
    """Seconds until ``proc`` goes quiet (at most 1 tick of CPU per 0.2 s window): work a server
    deferred (e.g. background transcript writes) still has to be done, and counts."""
    t0 = time.perf_counter()
    last = proc.cpu_seconds()
    while time.perf_counter() - t0 < limit:
        time.sleep(0.2)
        now = proc.cpu_seconds()
        if now - last <= 1.0 / CLK_TCK:
            return max(0.0, time.perf_counter() - t0 - 0.2)
        last = now
    return limit


def load(target: Target, total: int, duration: float) -> dict[str, Any]:
    """Throughput of ``CONNECTIONS`` keep-alive connections for ``total`` requests (or time).

    ``rps`` counts the load's wall time only; ``sustained_rps`` adds the time the server then
    needs to finish the work it deferred (``settle_s``), and the server's CPU per request covers
    both, so a server that queues work in the background cannot look faster than it is.
    """
    import uvloop

    make = target.requests()
    cpu0 = target.proc.cpu_seconds() if target.proc else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    run = uvloop.run(_load(target.port, make, total, duration))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    settle_s = settle(target.proc) if target.proc else 0.0
    cpu1 = target.proc.cpu_seconds() if target.proc else None
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out: dict[str, Any] = {
        "requests": run.done,
        "errors": run.errors,
        "seconds": round(wall, 3),
        "rps": round(run.done / wall, 1),
        "settle_s": round(settle_s, 2),
        "sustained_rps": round(run.done / (wall + settle_s), 1),
        "latency_p50_ms": round(pct(run.latencies, 50) * 1000, 3),
        "latency_p99_ms": round(pct(run.latencies, 99) * 1000, 3),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
    }
    if cpu0 is not None and cpu1 is not None and run.done:
        out["server_cpu_us_per_req"] = round((cpu1 - cpu0) / run.done * 1e6, 1)
        out["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (wall + settle_s), 1)
    if target.proc is not None:
        out["server_rss_mb"] = rss_mb(target.proc)
    return out


def rss_mb(proc: Proc) -> float:
    with open(f"/proc/{proc.popen.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def throughput(
    targets: Sequence[Target], *, rounds: int, total: int, duration: float, warmup: int
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds; per target the round with the median sustained rate (and all)."""
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for t in targets:
        load(t, warmup, 10)
    for r in range(rounds):
        for t in targets if r % 2 == 0 else reversed(targets):
            res = load(t, total, duration)
            if res["errors"]:
                raise RuntimeError(f"{t.name}: {res['errors']} failed requests under load")
            runs[t.name].append(res)
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ranked = sorted(results, key=lambda x: x["sustained_rps"])
        mid = dict(ranked[len(ranked) // 2])
        mid["rps_all"] = [x["rps"] for x in results]
        mid["sustained_rps_all"] = [x["sustained_rps"] for x in results]
        cpus = [x["server_cpu_us_per_req"] for x in results if "server_cpu_us_per_req" in x]
        if cpus:
            mid["server_cpu_us_per_req"] = round(statistics.median(cpus), 1)
        out[name] = mid
    return out


# ============================================================================================
# The run


@dataclass
class Settings:
    rounds: int
    per_round: int
    warmup: int
    load_rounds: int
    load_total: int
    load_duration: float
    seq_budget: float


FULL = Settings(
    rounds=6,
    per_round=250,
    warmup=200,
    load_rounds=3,
    load_total=6000,
    load_duration=8.0,
    seq_budget=60.0,
)
QUICK = Settings(
    rounds=2,
    per_round=100,
    warmup=50,
    load_rounds=1,
    load_total=1500,
    load_duration=4.0,
    seq_budget=15.0,
)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()


def checkout(ref: str, into: Path) -> Path:
    """The ``src`` tree of git ``ref`` (for ``--compare``), extracted under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run(settings: Settings, quick: bool, compare: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"quick": quick, "settings": settings.__dict__}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        base_src = checkout(compare, tmp / "base-tree") if compare else None
        # Stored sessions first (before the gateways that own them start).
        fill_s: dict[int, float] = {}
        for size in STATE_SIZES:
            t0 = time.perf_counter()
            n = asyncio.run(prefill(tmp / f"gw-{size // 1000}k" / "state", size))
            fill_s[size] = round(time.perf_counter() - t0, 2)
            print(f"prefilled {n:,} stored sessions in {fill_s[size]}s", flush=True)
        if base_src is not None:
            # Written by the other commit's own store: its on-disk format may differ.
            subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--prefill",
                 str(tmp / "base-1k" / "state"), "--prefill-size", str(STATE_SIZES[0])],
                env={**os.environ, "PYTHONPATH": str(base_src)},
                check=True,
            )  # fmt: skip

        up = spawn_ready("upstream", ["--serve", "upstream"])
        procs.append(up)
        hop = spawn_ready("hop", ["--serve", "hop", "--upstream-port", str(up.port)])
        procs.append(hop)
        gws: dict[str, Proc] = {}
        for name, level in (
            ("gw", "warning"),
            ("gw-info", "info"),
            ("gw-1k", "warning"),
            ("gw-100k", "warning"),
        ):
            gws[name] = spawn_gateway(name, tmp, up.port, log_level=level)
            procs.append(gws[name])
        if base_src is not None:
            for name in ("base", "base-1k"):
                gws[name] = spawn_gateway(name, tmp, up.port, source=base_src)
                procs.append(gws[name])
        print("servers up: " + ", ".join(f"{p.name}:{p.port}" for p in procs), flush=True)

        direct = Target("direct", up.port, UPSTREAM_MODEL, proc=up)
        hop_t = Target("hop", hop.port, UPSTREAM_MODEL, proc=hop)
        gw = Target("gw", gws["gw"].port, "openclaw", proc=gws["gw"])
        gw_info = Target("gw-info", gws["gw-info"].port, "openclaw", proc=gws["gw-info"])
        gw_1k = Target("gw-user-1k", gws["gw-1k"].port, "openclaw", True, gws["gw-1k"])
        gw_100k = Target("gw-user-100k", gws["gw-100k"].port, "openclaw", True, gws["gw-100k"])
        every = [direct, hop_t, gw, gw_info, gw_1k, gw_100k]
        if base_src is not None:
            # The same gateways built from another commit, measured in the same rounds.
            every += [
                Target("base", gws["base"].port, "openclaw", proc=gws["base"]),
                Target("base-user-1k", gws["base-1k"].port, "openclaw", True, gws["base-1k"]),
            ]

        s = settings
        print("latency (non-streaming) ...", flush=True)
        lat = sequential(
            every,
            stream=False,
            rounds=s.rounds,
            per_round=s.per_round,
            warmup=s.warmup,
            time_budget=s.seq_budget,
        )
        print("TTFT (streaming) ...", flush=True)
        ttft = sequential(
            [direct, hop_t, gw],
            stream=True,
            rounds=s.rounds,
            per_round=s.per_round,
            warmup=s.warmup,
            time_budget=s.seq_budget,
        )
        print("throughput ...", flush=True)
        tput = throughput(
            every,
            rounds=s.load_rounds,
            total=s.load_total,
            duration=s.load_duration,
            warmup=min(500, s.load_total),
        )

        for proc in procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} died during the run")
        info_log = gws["gw-info"].log_path
        assert info_log is not None
        info_lines = info_log.read_bytes().count(b"\n")
        for p in reversed(procs):
            p.stop()
        counts = {
            size: asyncio.run(count_sessions(tmp / f"gw-{size // 1000}k" / "state"))
            for size in STATE_SIZES
        }

    latency = {name: summary_ms(v["total"], v["cpu"]) for name, v in lat.items()}
    stream = {
        name: {"ttft": summary_ms(v["ttft"]), "total": summary_ms(v["total"])}
        for name, v in ttft.items()
    }
    p50 = {name: v["p50_ms"] for name, v in latency.items()}
    ttft50 = {name: v["ttft"]["p50_ms"] for name, v in stream.items()}
    rps = {name: v["sustained_rps"] for name, v in tput.items()}
    burst = {name: v["rps"] for name, v in tput.items()}

    added = round(p50["gw"] - p50["direct"], 4)
    added_ttft = round(ttft50["gw"] - ttft50["direct"], 4)
    tput_ratio = ratio(rps["gw"], rps["hop"])
    flat_lat = ratio(p50["gw-user-100k"], p50["gw-user-1k"])
    flat_tput = ratio(rps["gw-user-100k"], rps["gw-user-1k"])
    targets = {
        "added_latency_p50": {
            "value_ms": added,
            "limit_ms": TARGET_ADDED_LATENCY_MS,
            "ratio_gw_over_direct": ratio(p50["gw"], p50["direct"]),
            "met": added <= TARGET_ADDED_LATENCY_MS,
        },
        "added_ttft_p50": {
            "value_ms": added_ttft,
            "limit_ms": TARGET_ADDED_TTFT_MS,
            "ratio_gw_over_direct": ratio(ttft50["gw"], ttft50["direct"]),
            "met": added_ttft <= TARGET_ADDED_TTFT_MS,
        },
        "throughput_vs_hop": {
            "ratio": tput_ratio,
            "burst_ratio": ratio(burst["gw"], burst["hop"]),
            "limit": TARGET_THROUGHPUT_RATIO,
            "met": tput_ratio >= TARGET_THROUGHPUT_RATIO,
        },
        "sessions_flat_1k_to_100k": {
            "latency_p50_ratio": flat_lat,
            "throughput_ratio": flat_tput,
            "tolerance": FLAT_TOLERANCE,
            "met": flat_lat <= FLAT_TOLERANCE and flat_tput >= 1 / FLAT_TOLERANCE,
        },
    }
    derived = {
        "hop_added_p50_ms": round(p50["hop"] - p50["direct"], 4),
        "gw_added_over_hop_p50_ms": round(p50["gw"] - p50["hop"], 4),
        "info_logs_added_p50_ms": round(p50["gw-info"] - p50["gw"], 4),
        "info_logs_throughput_ratio": ratio(rps["gw-info"], rps["gw"]),
        "stateful_added_p50_ms": round(p50["gw-user-1k"] - p50["gw"], 4),
        "stateful_throughput_ratio": ratio(rps["gw-user-1k"], rps["gw"]),
        "gw_cpu_per_req_over_hop": ratio(
            tput["gw"].get("server_cpu_us_per_req", 0), tput["hop"].get("server_cpu_us_per_req", 0)
        ),
        "info_log_lines": info_lines,
    }
    if compare:
        derived["compare"] = {
            "ref": compare,
            "stateless_added_p50_ms_vs_base": round(p50["gw"] - p50["base"], 4),
            "stateless_throughput_vs_base": ratio(rps["gw"], rps["base"]),
            "stateful_added_p50_ms_vs_base": round(p50["gw-user-1k"] - p50["base-user-1k"], 4),
            "stateful_throughput_vs_base": ratio(rps["gw-user-1k"], rps["base-user-1k"]),
            "base_added_latency_p50_ms": round(p50["base"] - p50["direct"], 4),
            "base_throughput_vs_hop": ratio(rps["base"], rps["hop"]),
        }
    result.update(
        latency=latency,
        streaming=stream,
        throughput=tput,
        targets=targets,
        derived=derived,
        sessions={
            "prefill_seconds": fill_s,
            "count_after": counts,
            "user_pool": USER_POOL,
            "history_messages": HISTORY_MESSAGES,
        },
        environment=environment(),
        seconds=round(time.perf_counter() - started, 1),
    )
    return result


def environment() -> dict[str, Any]:
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "connections": CONNECTIONS,
    }


def report(res: dict[str, Any]) -> None:
    lat, st, tp, tg, dv = (
        res[k] for k in ("latency", "streaming", "throughput", "targets", "derived")
    )
    d50 = lat["direct"]["p50_ms"]
    print("\nNon-streaming latency, sequential keep-alive (ms)")
    print(
        f"{'target':<14}{'p50':>8}{'p95':>8}{'p99':>8}{'added p50':>11}{'x direct':>10}"
        f"{'CPU us/req':>12}"
    )
    for name, v in lat.items():
        print(
            f"{name:<14}{v['p50_ms']:>8.3f}{v['p95_ms']:>8.3f}{v['p99_ms']:>8.3f}"
            f"{v['p50_ms'] - d50:>11.3f}{v['p50_ms'] / d50:>10.2f}"
            f"{v.get('server_cpu_us_per_req', float('nan')):>12.0f}"
        )
    t50 = st["direct"]["ttft"]["p50_ms"]
    print("\nStreaming: time to first content token (ms)")
    print(f"{'target':<14}{'p50':>8}{'p95':>8}{'p99':>8}{'added p50':>11}{'total p50':>11}")
    for name, v in st.items():
        f = v["ttft"]
        print(
            f"{name:<14}{f['p50_ms']:>8.3f}{f['p95_ms']:>8.3f}{f['p99_ms']:>8.3f}"
            f"{f['p50_ms'] - t50:>11.3f}{v['total']['p50_ms']:>11.3f}"
        )
    hop_rps = tp["hop"]["sustained_rps"]
    print(
        f"\nThroughput, {CONNECTIONS} keep-alive connections (round with the median sustained"
        " rate;\n sustained = requests / (load time + time the server then needs to go idle))"
    )
    print(
        f"{'target':<14}{'burst/s':>9}{'settle s':>9}{'sustained':>10}{'x hop':>7}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'CPU us/req':>11}{'RSS MB':>8}{'client%':>8}"
    )
    for name, v in tp.items():
        cpu = v.get("server_cpu_us_per_req", float("nan"))
        print(
            f"{name:<14}{v['rps']:>9.0f}{v['settle_s']:>9.2f}{v['sustained_rps']:>10.0f}"
            f"{v['sustained_rps'] / hop_rps:>7.2f}{v['latency_p50_ms']:>8.2f}"
            f"{v['latency_p99_ms']:>8.2f}{cpu:>11.0f}{v.get('server_rss_mb', 0):>8.0f}"
            f"{v['client_cpu_pct']:>8.0f}"
        )
    print("\nTargets")
    a, f, t, s = (
        tg[k]
        for k in (
            "added_latency_p50",
            "added_ttft_p50",
            "throughput_vs_hop",
            "sessions_flat_1k_to_100k",
        )
    )

    def ok(met: bool) -> str:
        return "MET" if met else "NOT MET"

    print(
        f"  added latency p50     {a['value_ms']:.3f} ms (limit {a['limit_ms']})"
        f"  gw/direct {a['ratio_gw_over_direct']:.2f}x   {ok(a['met'])}"
    )
    print(
        f"  added TTFT p50        {f['value_ms']:.3f} ms (limit {f['limit_ms']})"
        f"  gw/direct {f['ratio_gw_over_direct']:.2f}x   {ok(f['met'])}"
    )
    print(
        f"  throughput gw/hop     {t['ratio']:.2f} sustained, {t['burst_ratio']:.2f} burst"
        f" (limit >= {t['limit']})   {ok(t['met'])}"
    )
    print(
        f"  sessions 100k/1k      latency p50 {s['latency_p50_ratio']:.2f},"
        f" throughput {s['throughput_ratio']:.2f} (tolerance {s['tolerance']})"
        f"   {ok(s['met'])}"
    )
    print("\nOther figures")
    print(
        f"  bare hop added p50 {dv['hop_added_p50_ms']:.3f} ms; gateway over hop "
        f"{dv['gw_added_over_hop_p50_ms']:.3f} ms; gateway CPU/request "
        f"{dv['gw_cpu_per_req_over_hop']:.2f}x the hop's"
    )
    print(
        f"  info-level access logs: +{dv['info_logs_added_p50_ms']:.3f} ms p50, "
        f"throughput x{dv['info_logs_throughput_ratio']:.2f} ({dv['info_log_lines']} lines)"
    )
    print(
        f"  stateful (user set) vs stateless: +{dv['stateful_added_p50_ms']:.3f} ms p50, "
        f"throughput x{dv['stateful_throughput_ratio']:.2f}"
    )
    cmp = dv.get("compare")
    if cmp:
        print(
            f"  vs {cmp['ref']} (same run): stateless {cmp['stateless_added_p50_ms_vs_base']:+.3f}"
            f" ms p50, throughput x{cmp['stateless_throughput_vs_base']:.2f}; stateful (user)"
            f" {cmp['stateful_added_p50_ms_vs_base']:+.3f} ms p50, throughput"
            f" x{cmp['stateful_throughput_vs_base']:.2f}"
        )
    env = res["environment"]
    print(
        f"\n{res['seconds']}s, {env['cpus']} CPUs, load average {env['loadavg']}; "
        f"results in {res['output']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 20 s)")
    parser.add_argument("--serve", choices=("upstream", "hop"), help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="also measure gateways built from git REF (e.g. HEAD~1), in the same rounds",
    )
    parser.add_argument("--prefill", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefill-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prefill is not None:
        asyncio.run(prefill(args.prefill, args.prefill_size))
        return
    if args.serve == "upstream":
        serve_upstream()
        return
    if args.serve == "hop":
        serve_hop(args.upstream_port)
        return
    random.seed(0)
    res = run(QUICK if args.quick else FULL, args.quick, args.compare)
    res["output"] = str(args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2) + "\n")
    report(res)


if __name__ == "__main__":
    main()
