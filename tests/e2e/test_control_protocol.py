"""What the control page needs from the gateway, for every client: the page and its assets on
the port (cached by content hash, a strict CSP, not a catch-all), and the WebSocket methods
`agent.abort`, `sessions.delete`, `sessions.list` search, `status`, `agents.list` and images
on `agent`."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import Ws, chat_config
from tests.harness import TOKEN
from tests.postgres import require_postgres
from tests.upstream import FakeUpstream, slow_stream

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(params=["sqlite", "postgres"])
def session(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `session` config section: the embedded store, or the shared one (a schema of its
    own on the test server)."""
    if request.param == "sqlite":
        return {}
    schema = request.getfixturevalue("pg_schema")
    return {"store": "postgres", "postgres": {"url": require_postgres(), "schema": schema}}


def ui_config(up: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    return chat_config(up, **overrides)


# --- the page on the port -----------------------------------------------------------------


def test_page_and_hashed_assets(fake: FakeUpstream, gateway_factory) -> None:
    gw = gateway_factory(ui_config(fake))
    with httpx.Client(base_url=gw.url) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-frame-options"] == "DENY"
        # No inline script: every <script> has a src, hashed.
        html = page.text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
        assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
        assert {a.rsplit("/", 1)[1].split(".")[0] for a in assets} >= {"app", "icon"}
        assert TOKEN not in html
        for path in set(assets):
            got = http.get(path)
            assert got.status_code == 200, path
            assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert TOKEN not in got.text
            again = http.get(path, headers={"if-none-match": got.headers["etag"]})
            assert again.status_code == 304
        head = http.head("/")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(page.content)
        # Only the current names exist; no catch-all.
        missing = http.get("/assets/app.000000000000.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        for path in ("/nope", "/v1/responses", "/index.html"):
            got = http.get(path)
            assert got.status_code == 404, path
            assert got.json()["error"]["type"] == "invalid_request_error"


def test_page_under_a_base_path_and_disabled(fake: FakeUpstream, gateway_factory) -> None:
    gw = gateway_factory(ui_config(fake, gateway={"controlUi": {"basePath": "/openclaw/"}}))
    with httpx.Client(base_url=gw.url) as http:
        assert http.get("/").status_code == 404
        for path in ("/openclaw", "/openclaw/"):
            page = http.get(path)
            assert page.status_code == 200
            assert '<meta name="openclaw-base" content="/openclaw">' in page.text
        asset = re.search(r'src="(/openclaw/assets/app\.[0-9a-f]{12}\.js)"', page.text)
        assert asset and http.get(asset.group(1)).status_code == 200
    from websockets.sync.client import connect

    with connect(gw.ws_url.rstrip("/") + "/openclaw") as conn:
        ws = Ws(conn)
        _, hello = ws.call("connect", {"auth": {"token": gw.token}})
        assert hello["ok"] is True

    off = gateway_factory(ui_config(fake, gateway={"controlUi": {"enabled": False}}))
    with httpx.Client(base_url=off.url) as http:
        got = http.get("/")
        assert got.status_code == 404 and got.json()["error"]["code"] == "not_found"


def test_a_bad_base_path_is_a_config_error() -> None:
    from openclaw.config.schema import Config

    for bad in ("/v1", "/a b", "/../x", "/x?y"):
        with pytest.raises(ValueError):
            Config.model_validate({"gateway": {"controlUi": {"basePath": bad}}})
    assert (
        Config.model_validate(
            {"gateway": {"controlUi": {"basePath": "ui"}}}
        ).gateway.control_ui.base_path
        == "/ui"
    )


# --- the protocol's new methods -------------------------------------------------------------


def _start(ws: Ws, params: dict[str, Any]) -> tuple[str, str]:
    """Send `agent` without waiting for its answer; (frame id, run id from the start event)."""
    frame_id = "run-1"
    ws.conn.send(
        orjson.dumps({"type": "req", "id": frame_id, "method": "agent", "params": params}).decode()
    )
    while True:
        msg = orjson.loads(ws.conn.recv(timeout=10))
        if msg["type"] == "event" and msg["payload"]["stream"] == "assistant":
            return frame_id, msg["payload"]["runId"]


def _answer(ws: Ws, frame_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = []
    while True:
        msg = orjson.loads(ws.conn.recv(timeout=10))
        if msg["type"] == "event":
            events.append(msg["payload"])
        elif msg.get("id") == frame_id:
            return events, msg


def test_abort_stops_the_run_like_a_disconnect(
    fake: FakeUpstream, gateway_factory, ws_to, session
) -> None:
    gw = gateway_factory(ui_config(fake, session=session))
    ws = ws_to(gw)
    other = ws_to(gw)
    fake.script(slow_stream(chunks=400, delay=0.05))
    frame_id, run_id = _start(ws, {"message": "long", "sessionKey": "stopme"})

    _, status = other.call("status")
    runs = status["payload"]["activeRuns"]
    assert [(r["runId"], r["sessionKey"], r["abortable"]) for r in runs] == [
        (run_id, "agent:main:stopme", True)
    ]
    _, aborted = other.call("agent.abort", {"runId": run_id})
    assert aborted["ok"] is True and aborted["payload"] == {"runId": run_id, "aborted": True}
    events, answer = _answer(ws, frame_id)
    assert answer["ok"] is True
    assert answer["payload"]["stopReason"] == "aborted"
    assert answer["payload"]["runId"] == run_id
    assert events[-1]["stream"] == "lifecycle" and events[-1]["data"]["phase"] == "aborted"
    assert fake.wait_for_disconnect(30)
    assert fake.disconnects[0].chunks_sent < 400
    # The partial turn is stored, marked aborted (history waits for the background write).
    _, history = ws.call("sessions.history", {"sessionKey": "stopme"})
    last = history["payload"]["messages"][-1]
    assert last["role"] == "assistant" and last["stopReason"] == "aborted"
    assert last["content"].startswith("w0 ")
    # The socket goes on: the next run on the session works.
    _, res = ws.call("agent", {"message": "again", "sessionKey": "stopme"})
    assert res["ok"] is True and res["payload"]["stopReason"] == "stop"
    _, status = other.call("status")
    assert status["payload"]["activeRuns"] == []
    # Unknown (or finished) runs: a 404-style error.
    _, gone = ws.call("agent.abort", {"runId": run_id})
    assert gone["ok"] is False and gone["error"]["code"] == "run_not_found"
    _, bad = ws.call("agent.abort", {})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_request_error"


def test_sessions_delete_and_search(fake: FakeUpstream, gateway_factory, ws_to, session) -> None:
    gw = gateway_factory(ui_config(fake, session=session))
    ws = ws_to(gw)
    for key in ("alpha-one", "beta-two", "ALPHA-three"):
        _, res = ws.call("agent", {"message": "hi", "sessionKey": key})
        assert res["ok"] is True
    _, found = ws.call("sessions.list", {"search": "alpha"})
    keys = {s["key"] for s in found["payload"]["sessions"]}
    assert keys == {"agent:main:alpha-one", "agent:main:ALPHA-three"}
    _, deleted = ws.call("sessions.delete", {"sessionKey": "alpha-one"})
    assert deleted["payload"] == {"sessionKey": "agent:main:alpha-one", "deleted": True}
    _, found = ws.call("sessions.list", {"search": "alpha"})
    assert {s["key"] for s in found["payload"]["sessions"]} == {"agent:main:ALPHA-three"}
    _, again = ws.call("sessions.delete", {"sessionKey": "alpha-one"})
    assert again["ok"] is False and again["error"]["code"] == "session_not_found"
    _, history = ws.call("sessions.history", {"sessionKey": "alpha-one"})
    assert history["error"]["code"] == "session_not_found"

    # A session with a run in progress is not deleted under it.
    fake.script(slow_stream(chunks=400, delay=0.05))
    frame_id, run_id = _start(ws, {"message": "long", "sessionKey": "busy"})
    # Same socket: its requests are served concurrently.
    _, busy = ws.call("sessions.delete", {"sessionKey": "busy"})
    assert busy["ok"] is False and busy["error"]["code"] == "session_busy"
    # agent.abort answers once the run has ended: the run's own answer comes first.
    ws.conn.send(
        orjson.dumps(
            {"type": "req", "id": "stop", "method": "agent.abort", "params": {"runId": run_id}}
        ).decode()
    )
    answers = []
    while not answers or answers[-1]["id"] != "stop":
        msg = orjson.loads(ws.conn.recv(timeout=10))
        if msg["type"] == "res":
            answers.append(msg)
    assert [(a["id"], a["ok"]) for a in answers] == [(frame_id, True), ("stop", True)]
    assert answers[0]["payload"]["stopReason"] == "aborted"


def test_status_and_agents_list_mask_every_secret(
    fake: FakeUpstream, gateway_factory, ws_to, monkeypatch
) -> None:
    base = fake.base_url.replace("http://", "http://alice:pw-SECRET-9012@") + "?key=q-SECRET-3456"
    provider = {
        "apiKey": "sk-upstream-SECRET-1234",
        "baseUrl": base,
        "headers": {
            "X-Api-Token": "hdr-SECRET-5678",
            "X-Credential": "c-SECRET-7890",
            "X-Title": "my app",
        },
    }
    gw = gateway_factory(ui_config(fake, provider=provider))
    ws = ws_to(gw)
    _, agents = ws.call("agents.list")
    assert agents["payload"]["defaultId"] == "main"
    assert [a["id"] for a in agents["payload"]["agents"]] == ["main", "beta"]
    assert agents["payload"]["agents"][0]["model"] == "fake/fake-model"

    _, res = ws.call("status")
    status = res["payload"]
    assert status["version"] and status["uptimeSeconds"] >= 0 and status["pid"] > 0
    assert status["workers"] == 1
    assert status["endpoints"]["chatCompletions"] is True
    assert status["endpoints"]["responses"] is False
    assert status["endpoints"]["controlUi"] is True
    text = orjson.dumps(status).decode()
    assert "SECRET" not in text and gw.token not in text
    fake_provider = status["config"]["models"]["providers"]["fake"]
    assert fake_provider["apiKey"] == "[REDACTED]"
    assert fake_provider["baseUrl"].startswith("http://[REDACTED]@127.0.0.1:")
    assert fake_provider["baseUrl"].endswith("?key=[REDACTED]")
    assert fake_provider["headers"] == {
        "X-Api-Token": "[REDACTED]",
        "X-Credential": "[REDACTED]",
        "X-Title": "my app",
    }
    assert status["config"]["gateway"]["auth"]["token"] == "[REDACTED]"
    assert (
        status["config"]["gateway"]["port"] == gw.port or status["config"]["gateway"]["port"] >= 0
    )


def test_agent_takes_images_within_the_limits(
    fake: FakeUpstream, gateway_factory, ws_to, session
) -> None:
    gw = gateway_factory(ui_config(fake, session=session))
    ws = ws_to(gw)
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    _, res = ws.call("agent", {"message": "what is this?", "images": [uri]})
    assert res["ok"] is True, res
    sent = fake.model_requests[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in sent] == ["text", "image_url"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
    _, history = ws.call("sessions.history", {"sessionKey": "main"})
    user = history["payload"]["messages"][-2]
    assert user["content"][1] == {"type": "image", "mime": "image/png", "bytes": len(PNG)}

    for images, code in (
        (["https://example.com/x.png"], "invalid_request_error"),
        (["data:image/png;base64,AAAA"], "invalid_request_error"),
        ("nope", "invalid_request_error"),
    ):
        _, bad = ws.call("agent", {"message": "x", "images": images})
        assert bad["ok"] is False and bad["error"]["code"] == code, bad
    assert len(fake.model_requests) == 1


def test_abort_is_only_for_the_caller_who_started_the_run(
    fake: FakeUpstream, gateway_factory, ws_to
) -> None:
    """A run started over HTTP is listed in status but cannot be stopped from the WebSocket."""
    gw = gateway_factory(ui_config(fake))
    ws = ws_to(gw)
    fake.script(slow_stream(chunks=400, delay=0.05))
    body = {"model": "openclaw", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with (
        httpx.Client(base_url=gw.url, headers=gw.auth_headers(), timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as stream,
    ):
        next(line for line in stream.iter_lines() if line.startswith("data: "))
        _, status = ws.call("status")
        runs = status["payload"]["activeRuns"]
        assert len(runs) == 1 and runs[0]["abortable"] is False
        _, refused = ws.call("agent.abort", {"runId": runs[0]["runId"]})
        assert refused["ok"] is False and refused["error"]["code"] == "run_not_found"
