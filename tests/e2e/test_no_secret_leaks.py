"""No secret ever leaves the gateway: the gateway's token and password and the providers' API keys
never appear in a response body, a response header, a WebSocket frame or close reason, or a line
of the gateway's own log (the stderr of a real ``openclaw gateway run``), on every error path:
bad credentials, the failed-auth limit, upstream errors whose bodies carry the key (401, 429,
500, a provider echoing the ``Authorization`` header), an invalid config at start-up, the
WebSocket handshake, refused image URLs; at the default log level, at ``debug`` and at ``debug``
in the JSON log format.  The upstreams' records are checked too: each sees its own key and no
other secret (not the gateway's, not the other provider's).

Every secret holds the marker ``LEAKCHECK``, which nothing else in these tests contains: any
occurrence of it anywhere checked is a leak (of the whole secret or a part of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.processes import GatewayProcess
from tests.e2e.rawhttp import Reply, request
from tests.upstream import FakeUpstream, HttpError, StreamError

MARK = "LEAKCHECK"
TOKEN = "tok-LEAKCHECK-7f3a9c2e1b5d"
PASSWORD = "pw-LEAKCHECK-4d8e2a6f0c9b"
OPENAI_KEY = "sk-LEAKCHECK-openai-5b1c9e7a3d"
ANTHROPIC_KEY = "sk-ant-LEAKCHECK-2e6a8c4f1b7d"
SECRETS = {
    "gateway token": TOKEN,
    "gateway password": PASSWORD,
    "OpenAI key": OPENAI_KEY,
    "Anthropic key": ANTHROPIC_KEY,
}
WRONG = "wrong-guess-0000"  # a bad credential a client presents (not a secret)

# The log as configured by default, at debug, and at debug in the JSON format (which writes
# every extra field of a record).
LEVELS = pytest.mark.parametrize("level", ["info", "debug", "debug-json"])


def log_env(level: str) -> dict[str, str]:
    name, _, fmt = level.partition("-")
    return {"OPENCLAW_LOG_LEVEL": name, "OPENCLAW_LOG_FORMAT": fmt or "text"}


# Two leaks these tests found, both fixed: an upstream's error message quoting the key it was
# sent (masked in providers/registry.py, which every provider error passes through), and
# start-up config errors quoting a bad value (a key pasted in the wrong field).


# --- what the gateway let out ---------------------------------------------------------------------


class Probe:
    """Drives one gateway process and keeps everything it sends back; ``check`` stops the
    gateway (so its log is complete) and looks for the secrets in all of it, and in what the
    upstreams received (each may see its own key, nothing else: not the gateway's secret a
    client presented, not another provider's key)."""

    def __init__(self, gw: GatewayProcess, upstreams: dict[str, tuple[FakeUpstream, str]]) -> None:
        self.gw = gw
        self.upstreams = upstreams
        self.seen: list[tuple[str, str]] = []

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None if body is None else orjson.dumps(body)
        reply = request(self.gw.port, method, path, body=data, headers=sent)
        where = f"{method} {path} -> {reply.status}"
        self.seen.append((f"{where} body", reply.body.decode("utf-8", "replace")))
        head = "".join(f"{k}: {v}\n" for k, v in reply.headers.items())
        self.seen.append((f"{where} headers", head))
        return reply

    def ws(
        self, *frames: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Send ``frames`` in order (each answered before the next; the first is the handshake),
        then close; (every frame received, how the connection ended).  A refused handshake is
        followed to the gateway's close, whose reason is kept too."""
        got: list[dict[str, Any]] = []
        ended = "closed by the client"
        url = f"ws://127.0.0.1:{self.gw.port}/"
        try:
            with connect(url, additional_headers=headers, open_timeout=10) as ws:
                for frame in frames:
                    ws.send(orjson.dumps(frame).decode())
                    while True:
                        msg = orjson.loads(ws.recv(timeout=30))
                        got.append(msg)
                        self.seen.append(("WebSocket frame", json.dumps(msg)))
                        if msg.get("type") == "res" and msg.get("id") == frame.get("id"):
                            break
                    if msg["ok"] is False and frame is frames[0]:
                        ws.recv(timeout=10)  # the gateway closes: ConnectionClosed
                        raise AssertionError("a refused handshake left the connection open")
        except ConnectionClosed as exc:
            close = exc.rcvd
            ended = f"closed: {close.code} {close.reason}" if close else "closed: no close frame"
        except InvalidStatus as exc:
            ended = f"refused: {exc.response.status_code} {exc.response.body!r}"
        self.seen.append(("WebSocket close", ended))
        return got, ended

    def check(self) -> None:
        assert self.gw.stop() == 0
        self.seen.append(("gateway log", self.gw.log))
        for name, (up, own_key) in self.upstreams.items():
            for r in up.requests:
                text = "".join(f"{k}: {v}\n" for k, v in r.headers.items())
                text += r.raw.decode("utf-8", "replace")
                where = f"{r.method} {r.path} to the {name} upstream"
                self.seen.append((where, text.replace(own_key, "<its own key>")))
        assert_no_leaks(self.seen)


def assert_no_leaks(seen: list[tuple[str, str]]) -> None:
    leaks = []
    for where, text in seen:
        at = text.find(MARK)
        if at >= 0:
            which = [name for name, secret in SECRETS.items() if secret in text] or ["a part"]
            snippet = text[max(0, at - 120) : at + 60].replace("\n", "\\n")
            leaks.append(f"{', '.join(which)} in {where}: ...{snippet}...")
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


# --- the gateway under test ---------------------------------------------------------------------


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """(an OpenAI-compatible upstream, an Anthropic one), each requiring its own key."""
    with FakeUpstream(api_key=OPENAI_KEY) as oa, FakeUpstream(api_key=ANTHROPIC_KEY) as an:
        yield oa, an


def gateway_config(
    oa: FakeUpstream, an: FakeUpstream, *, auth: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Both OpenAI doors on (remote image URLs allowed, so that their refusal is reached), agent
    ``main`` on the OpenAI-compatible provider, ``claude`` on the Anthropic one, both keyed;
    one retry, so retried failures go through the retry path (and its log line)."""
    images = {"images": {"allowUrl": True}}
    models = [{"id": "fake-model", "input": ["text", "image"]}]
    return {
        "gateway": {
            "auth": auth or {"mode": "token", "token": TOKEN},
            "http": {
                "endpoints": {
                    "chatCompletions": {"enabled": True, **images},
                    "responses": {"enabled": True, **images},
                }
            },
        },
        "models": {
            "providers": {
                "oa": {
                    "api": "openai-completions",
                    "baseUrl": oa.base_url,
                    "apiKey": OPENAI_KEY,
                    "maxRetries": 1,
                    "models": models,
                },
                "an": {
                    "api": "anthropic-messages",
                    "baseUrl": an.root_url,
                    "apiKey": ANTHROPIC_KEY,
                    "maxRetries": 1,
                    "models": models,
                },
            }
        },
        "agents": {
            "defaults": {"model": "oa/fake-model"},
            "list": [{"id": "main", "default": True}, {"id": "claude", "model": "an/fake-model"}],
        },
        "tools": {"profile": "minimal"},
    }


@pytest.fixture
def probe(
    spawn: Callable[..., GatewayProcess], upstreams: tuple[FakeUpstream, FakeUpstream]
) -> Callable[..., Probe]:
    def start(level: str, *, auth: dict[str, Any] | None = None) -> Probe:
        oa, an = upstreams
        gw = spawn(gateway_config(oa, an, auth=auth), extra_env=log_env(level))
        return Probe(gw, {"OpenAI": (oa, OPENAI_KEY), "Anthropic": (an, ANTHROPIC_KEY)})

    return start


def chat(text: str, *, stream: bool = False, agent: str = "main") -> dict[str, Any]:
    body = {"model": f"openclaw/{agent}", "messages": [{"role": "user", "content": text}]}
    return {**body, "stream": stream}


def responses(text: str, *, stream: bool = False, agent: str = "main") -> dict[str, Any]:
    return {"model": f"openclaw/{agent}", "input": text, "stream": stream}


def connect_frame(secret: str, kind: str = "token", frame_id: str = "c") -> dict[str, Any]:
    return {"type": "req", "id": frame_id, "method": "connect", "params": {"auth": {kind: secret}}}


def agent_frame(text: str, agent: str = "main", frame_id: str = "a") -> dict[str, Any]:
    return {
        "type": "req",
        "id": frame_id,
        "method": "agent",
        "params": {"message": text, "agentId": agent},
    }


# --- bad credentials and the failed-auth limit ----------------------------------------------------


@LEVELS
def test_bad_tokens_are_refused_without_a_secret(probe, level: str) -> None:
    p = probe(level)
    for token, extra in (
        (None, {}),
        (WRONG, {}),
        (None, {"Authorization": f"Basic {WRONG}"}),
        (None, {"Authorization": "Bearer"}),
    ):
        for method, path, body in (
            ("POST", "/v1/chat/completions", chat("hi")),
            ("POST", "/v1/chat/completions", chat("hi", stream=True)),
            ("POST", "/v1/responses", responses("hi")),
            ("GET", "/v1/models", None),
            ("GET", "/v1/responses/resp_x", None),
            ("POST", "/v1/embeddings", {"model": "openclaw", "input": "x"}),
            ("POST", "/tools/invoke", {"tool": "sessions_list", "args": {}}),
        ):
            reply = p.http(method, path, body, token=token, headers=extra)
            assert reply.status == 401, (method, path, reply.body)
    # The right token works, and its answers carry no secret either.
    assert p.http("POST", "/v1/chat/completions", chat("hi")).status == 200
    assert p.http("POST", "/v1/responses", responses("hi", stream=True)).status == 200
    assert p.http("GET", "/v1/models").status == 200
    p.check()


@LEVELS
def test_the_failed_auth_limit_says_nothing_secret(probe, level: str) -> None:
    limit = {"maxAttempts": 2, "windowMs": 60_000, "lockoutMs": 60_000, "exemptLoopback": False}
    p = probe(level, auth={"mode": "token", "token": TOKEN, "rateLimit": limit})
    statuses = [p.http("POST", "/v1/chat/completions", chat("x"), token=WRONG).status]
    statuses.append(p.http("GET", "/v1/models", token=WRONG).status)
    locked = p.http("POST", "/v1/chat/completions", chat("x"), token=WRONG)
    assert statuses == [401, 401] and locked.status == 429
    assert int(locked.headers["Retry-After"]) > 0
    # Locked out even with the right secret, on every door.
    assert p.http("POST", "/v1/responses", responses("x")).status == 429
    _, ended = p.ws(connect_frame(TOKEN))
    assert "1013" in ended
    p.check()


@LEVELS
def test_password_mode_never_shows_the_password(probe, level: str) -> None:
    p = probe(level, auth={"mode": "password", "password": PASSWORD})
    assert p.http("POST", "/v1/chat/completions", chat("x"), token=WRONG).status == 401
    assert p.http("POST", "/v1/chat/completions", chat("x"), token=TOKEN).status == 401
    assert p.http("POST", "/v1/chat/completions", chat("x"), token=PASSWORD).status == 200
    _, ended = p.ws(connect_frame(WRONG, "password"))
    assert "1008" in ended
    frames, _ = p.ws(connect_frame(PASSWORD, "password"), agent_frame("hello"))
    assert frames[-1]["ok"] is True and frames[-1]["payload"]["text"] == "Echo: hello"
    p.check()


# --- the WebSocket handshake ----------------------------------------------------------------------


@LEVELS
def test_websocket_auth_failures_say_nothing_secret(probe, level: str) -> None:
    p = probe(level)
    frames, ended = p.ws(connect_frame(WRONG))
    assert frames[0]["ok"] is False and "1008" in ended
    # A bad secret in the upgrade's Authorization header, and a connect frame without one.
    frames, ended = p.ws(
        {"type": "req", "id": "c", "method": "connect", "params": {}},
        headers={"Authorization": f"Bearer {WRONG}"},
    )
    assert frames[0]["ok"] is False and "1008" in ended
    # Something other than connect first.
    frames, ended = p.ws({"type": "req", "id": "h", "method": "health"})
    assert frames[0]["ok"] is False and "1008" in ended
    # The right token (in the frame, then in the header) and a run: nothing secret either.
    frames, _ = p.ws(connect_frame(TOKEN), agent_frame("hello"))
    assert frames[0]["ok"] is True and frames[-1]["payload"]["text"] == "Echo: hello"
    frames, _ = p.ws(
        {"type": "req", "id": "c", "method": "connect", "params": {}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert frames[0]["ok"] is True
    p.check()


# --- upstream errors that carry the key -------------------------------------------------------------


def _drive_every_door(p: Probe, agent: str, text: str) -> list[int]:
    """The same failing model call through every door; the HTTP statuses."""
    statuses = [
        p.http("POST", "/v1/chat/completions", chat(text, agent=agent)).status,
        p.http("POST", "/v1/chat/completions", chat(text, stream=True, agent=agent)).status,
        p.http("POST", "/v1/responses", responses(text, agent=agent)).status,
        p.http("POST", "/v1/responses", responses(text, stream=True, agent=agent)).status,
    ]
    frames, _ = p.ws(connect_frame(TOKEN), agent_frame(text, agent=agent))
    assert frames[-1]["ok"] is False
    return statuses


@pytest.mark.parametrize("status", [401, 429, 500])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@LEVELS
def test_upstream_errors_carrying_the_key_do_not_pass_it_on(
    probe, upstreams, provider: str, status: int, level: str
) -> None:
    oa, an = upstreams
    key, agent, up = (
        (OPENAI_KEY, "main", oa) if provider == "openai" else (ANTHROPIC_KEY, "claude", an)
    )
    messages = {
        401: f"Incorrect API key provided: {key}. You can find your API key at https://x.",
        429: f"Rate limit reached for key {key} on requests per min.",
        500: f"Internal error while serving key {key}",
    }
    headers = {"Retry-After": "0"} if status == 429 else {}
    up.default = HttpError(status, messages[status], headers=headers)
    p = probe(level)
    statuses = _drive_every_door(p, agent, "hi")
    assert statuses[0] == {401: 502, 429: 429, 500: 502}[status]
    p.check()


@pytest.mark.parametrize("where", ["http-400", "mid-stream"])
@LEVELS
def test_a_provider_echoing_the_authorization_header_is_not_passed_on(
    probe, upstreams, where: str, level: str
) -> None:
    oa, _ = upstreams
    echo = f"Invalid header value: 'Authorization: Bearer {OPENAI_KEY}'"
    oa.default = HttpError(400, echo) if where == "http-400" else StreamError(after=1, message=echo)
    p = probe(level)
    statuses = _drive_every_door(p, "main", "a b c")
    assert statuses[0] in (400, 502)
    p.check()


@LEVELS
def test_upstream_errors_without_the_key_leave_nothing_secret(probe, upstreams, level) -> None:
    """The same paths with the providers' usual messages: clean (a control for the above)."""
    oa, an = upstreams
    p = probe(level)
    for up, agent in ((oa, "main"), (an, "claude")):
        for behaviour in (
            HttpError.unauthorized(),
            HttpError(429, headers={"Retry-After": "0"}),
            HttpError.server_error(),
            StreamError(after=1),
        ):
            up.default = behaviour
            _drive_every_door(p, agent, "a b c")
    p.check()


# --- image URLs refused ---------------------------------------------------------------------------


@LEVELS
def test_refused_image_urls_say_nothing_secret(probe, upstreams, level: str) -> None:
    oa, _ = upstreams
    p = probe(level)
    for url in (
        f"{oa.root_url}/image.png",
        "http://localhost:9/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://10.0.0.1/x.png",
        "ftp://example.com/x.png",
    ):
        part = {"type": "image_url", "image_url": {"url": url}}
        body = {"model": "openclaw", "messages": [{"role": "user", "content": [part]}]}
        assert p.http("POST", "/v1/chat/completions", body).status == 400, url
        item = {"role": "user", "content": [{"type": "input_image", "image_url": url}]}
        assert p.http("POST", "/v1/responses", {"model": "openclaw", "input": [item]}).status == 400
    assert oa.requests == []
    p.check()


# --- an invalid config at start-up ----------------------------------------------------------------


def _provider(**fields: Any) -> dict[str, Any]:
    entry = {
        "api": "openai-completions",
        "baseUrl": "http://127.0.0.1:9/v1",
        "apiKey": OPENAI_KEY,
        "models": [{"id": "m"}],
    }
    return {"models": {"providers": {"oa": {**entry, **fields}}}}


def _with_auth(**auth: Any) -> dict[str, Any]:
    return {"gateway": {"auth": {"mode": "token", "token": TOKEN, **auth}}}


BAD_CONFIGS: dict[str, Any] = {
    # The key where a string of another kind, a number or an object belongs.
    "key-in-api": _provider(api=OPENAI_KEY),
    "key-in-maxRetries": _provider(maxRetries=OPENAI_KEY),
    "key-in-timeoutSeconds": _provider(timeoutSeconds=OPENAI_KEY),
    "key-in-headers": _provider(headers=f"Authorization: Bearer {OPENAI_KEY}"),
    "key-as-a-list": _provider(apiKey=[OPENAI_KEY]),
    "key-under-a-misspelt-name": _provider(apikey=OPENAI_KEY),
    "token-in-auth-mode": {"gateway": {"auth": {"mode": TOKEN, "token": TOKEN}}},
    "token-as-a-list": {"gateway": {"auth": {"mode": "token", "token": [TOKEN]}}},
    "token-in-port": {"gateway": {"port": TOKEN, "auth": {"mode": "token", "token": TOKEN}}},
    "json5-syntax-error-by-the-key": (
        '{models: {providers: {oa: {api: "openai-completions", apiKey: "'
        + OPENAI_KEY
        + '" baseUrl: "x"}}}}'
    ),
    "json5-unterminated-key": '{gateway: {auth: {token: "' + TOKEN + "}}}",
    # The values these fields' own checks quote back.
    "key-in-the-agent-model": {**_provider(), "agents": {"defaults": {"model": OPENAI_KEY}}},
    "key-in-the-embeddings-model": {
        **_provider(),
        "agents": {"defaults": {"embeddings": {"model": OPENAI_KEY}}},
    },
    "token-in-trusted-proxy-addresses": _with_auth(
        mode="trusted-proxy", trustedProxy={"addresses": [TOKEN]}
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@LEVELS
def test_an_invalid_config_at_start_up_does_not_print_a_secret(
    tmp_path: Path, case: str, level: str
) -> None:
    config = BAD_CONFIGS[case]
    path = tmp_path / "openclaw.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    env = {
        **os.environ,
        "OPENCLAW_CONFIG_PATH": str(path),
        "OPENCLAW_STATE_DIR": str(tmp_path / "state"),
        **log_env(level),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "openclaw", "gateway", "run", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stderr
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
    assert_no_leaks([("stderr", proc.stderr), ("stdout", proc.stdout)])
