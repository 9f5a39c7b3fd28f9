"""The `agent` and `sessions.*` WebSocket methods, and `openclaw agent` / `openclaw sessions`, over
real sockets against the fake upstream: streaming, history across turns, the CLI's two paths
(gateway and --local) giving the same transcript, and the error paths a user meets first."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from openclaw.cli.main import cli
from tests.harness import TOKEN
from tests.upstream import FakeUpstream, HttpError, slow_stream

MAIN = "agent:main:main"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def model_config(up: FakeUpstream, agents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    defaults = {"model": "fake/fake-model"}
    return {
        "models": {
            "providers": {
                "fake": {
                    "api": "openai-completions",
                    "baseUrl": up.base_url,
                    "apiKey": "k",
                    "maxRetries": 0,
                    "models": [{"id": "fake-model"}],
                }
            }
        },
        "agents": {"defaults": defaults, **({"list": agents} if agents else {})},
        "tools": {"profile": "minimal"},
    }


# --- WebSocket methods --------------------------------------------------------------------------


def test_ws_agent_streams_events_then_result_and_carries_history(
    fake: FakeUpstream, gateway_factory, ws_to
) -> None:
    gw = gateway_factory(model_config(fake))
    ws = ws_to(gw)

    events, res = ws.call("agent", {"message": "hello there"})
    assert res["ok"] is True, res
    result = res["payload"]
    assert result["text"] == "Echo: hello there"
    assert result["sessionKey"] == MAIN
    assert result["agentId"] == "main"
    assert result["stopReason"] == "stop"
    assert result["model"] == "fake/fake-model"
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    assert all(e["event"] == "agent" for e in events)
    payloads = [e["payload"] for e in events]
    assert {(p["runId"], p["sessionKey"]) for p in payloads} == {(result["runId"], MAIN)}
    streams = [p["stream"] for p in payloads]
    assert streams[0] == "lifecycle" and payloads[0]["data"]["phase"] == "start"
    assert streams[-1] == "lifecycle" and payloads[-1]["data"]["phase"] == "end"
    deltas = [p["data"]["delta"] for p in payloads if p["stream"] == "assistant"]
    assert deltas == ["Echo: ", "hello ", "there"]  # one event per upstream chunk

    _, res2 = ws.call("agent", {"message": "and again"})
    assert res2["payload"]["text"] == "Echo: and again"
    assert res2["payload"]["runId"] != result["runId"]
    sent = fake.model_requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [
        ("user", "hello there"),
        ("assistant", "Echo: hello there"),
        ("user", "and again"),
    ]

    _, listed = ws.call("sessions.list")
    assert listed["ok"] is True
    [session] = listed["payload"]["sessions"]
    assert session["key"] == MAIN
    assert session["agentId"] == "main"
    assert session["ephemeral"] is False
    assert session["model"] == "fake/fake-model"
    assert session["usage"]["completionTokens"] == 3 + 3
    assert session["updatedAt"] >= session["createdAt"]

    _, history = ws.call("sessions.history", {"sessionKey": MAIN})
    assert history["payload"]["sessionKey"] == MAIN
    messages = history["payload"]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello there"),
        ("assistant", "Echo: hello there"),
        ("user", "and again"),
        ("assistant", "Echo: and again"),
    ]
    assert messages[1]["runId"] == result["runId"]
    assert messages[1]["stopReason"] == "stop"
    _, tail = ws.call("sessions.history", {"sessionKey": "main", "limit": 1})
    assert [m["content"] for m in tail["payload"]["messages"]] == ["Echo: and again"]


def test_ws_session_keys_agents_and_bad_params(fake: FakeUpstream, gateway_factory, ws_to) -> None:
    agents = [{"id": "main", "default": True}, {"id": "beta"}]
    gw = gateway_factory(model_config(fake, agents))
    ws = ws_to(gw)

    _, res = ws.call("agent", {"message": "x", "sessionKey": "work"})
    assert res["payload"]["sessionKey"] == "agent:main:work"
    _, res = ws.call("agent", {"message": "y", "agentId": "beta"})
    assert res["payload"]["sessionKey"] == "agent:beta:main"
    assert res["payload"]["agentId"] == "beta"
    _, res = ws.call("agent", {"message": "z", "sessionKey": "agent:beta:side"})
    assert res["payload"]["agentId"] == "beta"
    # The agent named inside a key wins over agentId, as on every door.
    _, res = ws.call("agent", {"message": "w", "sessionKey": "agent:beta:side", "agentId": "main"})
    assert res["payload"]["agentId"] == "beta"
    _, res = ws.call("agent", {"message": "s", "extraSystemPrompt": "Be brief."})
    assert fake.model_requests[-1].body["messages"][0] == {"role": "system", "content": "Be brief."}

    _, listed = ws.call("sessions.list", {"agentId": "beta"})
    assert sorted(s["key"] for s in listed["payload"]["sessions"]) == [
        "agent:beta:main",
        "agent:beta:side",
    ]
    _, listed = ws.call("sessions.list", {"limit": 1})
    assert len(listed["payload"]["sessions"]) == 1

    requests_before = len(fake.model_requests)
    bad = [
        ("agent", {}, "invalid_request_error"),
        ("agent", {"message": "   "}, "invalid_request_error"),
        ("agent", {"message": 5}, "invalid_request_error"),
        ("agent", {"message": "x", "sessionKey": "agent:Main:x"}, "invalid_request_error"),
        ("agent", {"message": "x", "sessionKey": "bad\nkey"}, "invalid_request_error"),
        ("agent", {"message": "x", "agentId": "nobody"}, "model_not_found"),
        ("sessions.list", {"limit": 0}, "invalid_request_error"),
        ("sessions.list", {"includeEphemeral": "yes"}, "invalid_request_error"),
        ("sessions.history", {}, "invalid_request_error"),
        ("sessions.history", {"sessionKey": "agent:main:nope"}, "session_not_found"),
    ]
    for method, params, code in bad:
        _, res = ws.call(method, params)
        assert res["ok"] is False, (method, params)
        if code is not None:
            assert code in (res["error"]["code"], res["error"]["type"]), res
    assert len(fake.model_requests) == requests_before  # nothing invalid reached the model


def test_ws_agent_failure_ends_with_lifecycle_error(
    fake: FakeUpstream, gateway_factory, ws_to
) -> None:
    gw = gateway_factory(model_config(fake))
    ws = ws_to(gw)
    fake.script(HttpError(400, "no such thing", code="bad_thing"))
    events, res = ws.call("agent", {"message": "boom"})
    assert res["ok"] is False
    assert "no such thing" in res["error"]["message"]
    last = events[-1]["payload"]
    assert last["stream"] == "lifecycle"
    assert last["data"]["phase"] == "error"
    assert "no such thing" in last["data"]["error"]
    # The connection stays usable after a failed run.
    _, ok = ws.call("agent", {"message": "fine"})
    assert ok["payload"]["text"] == "Echo: fine"


def test_repeating_the_last_message_keeps_the_conversation(
    fake: FakeUpstream, gateway_factory, ws_to
) -> None:
    ws = ws_to(gateway_factory(model_config(fake)))
    for _ in range(2):
        _, res = ws.call("agent", {"message": "yes"})
        assert res["ok"] is True
    sent = fake.model_requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == ["yes", "Echo: yes", "yes"]


def test_closing_the_socket_cancels_the_run(fake: FakeUpstream, gateway_factory, ws_to) -> None:
    gw = gateway_factory(model_config(fake))
    first = ws_to(gw)
    fake.script(slow_stream(chunks=200, delay=0.05))
    frame = {"type": "req", "id": "a", "method": "agent", "params": {"message": "long"}}
    first.conn.send(orjson.dumps(frame).decode())
    while orjson.loads(first.conn.recv(timeout=10))["payload"].get("stream") != "assistant":
        pass
    first.conn.close()
    assert fake.wait_for_disconnect(30)
    assert fake.disconnects[0].chunks_sent < 200
    second = ws_to(gw)
    deadline = time.monotonic() + 5
    while True:  # the aborted turn is written in the background
        _, history = second.call("sessions.history", {"sessionKey": MAIN})
        messages = history["payload"]["messages"] if history["ok"] else []
        if (messages and messages[-1]["role"] == "assistant") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    reply = messages[-1]
    assert reply["role"] == "assistant" and reply["stopReason"] == "aborted"
    assert reply["content"].startswith("w0 ")


# --- the CLI ------------------------------------------------------------------------------------


def write_cli_config(path: Path, up: FakeUpstream, *, port: int, token: str | None) -> Path:
    auth: dict[str, Any] = {"mode": "token"}
    if token is not None:
        auth["token"] = token
    path.write_bytes(orjson.dumps({"gateway": {"port": port, "auth": auth}, **model_config(up)}))
    return path


def run_cli(args: list[str], *, state: Path, config: Path) -> Result:
    env = {"OPENCLAW_STATE_DIR": str(state), "OPENCLAW_CONFIG_PATH": str(config)}
    return CliRunner().invoke(cli, args, env=env)


def shape(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A transcript without what differs between runs (ids, times)."""
    return [
        (m["role"], m["content"], m.get("usage"), m.get("stopReason"), m.get("model"), sorted(m))
        for m in messages
    ]


def stored_messages(state: Path, config: Path, key: str, count: int) -> list[dict[str, Any]]:
    """`sessions show --json`: a turn is stored before its reply, so no waiting."""
    res = run_cli(["sessions", "show", key, "--json"], state=state, config=config)
    assert res.exit_code == 0, res.output
    messages: list[dict[str, Any]] = orjson.loads(res.stdout)["messages"]
    assert len(messages) >= count, messages
    return messages


def test_cli_agent_over_gateway_and_local_give_the_same_transcript(
    fake: FakeUpstream, gateway_factory, state_dir: Path, tmp_path: Path
) -> None:
    gw = gateway_factory(model_config(fake))
    config = write_cli_config(tmp_path / "openclaw.json", fake, port=gw.port, token=TOKEN)

    first = run_cli(["agent", "-m", "one two"], state=state_dir, config=config)
    assert first.exit_code == 0, first.output
    assert first.stdout == "Echo: one two\n"
    second = run_cli(["agent", "-m", "three", "--json"], state=state_dir, config=config)
    assert second.exit_code == 0, second.output
    out = orjson.loads(second.stdout)
    assert set(out) == {"runId", "sessionKey", "text", "usage"}
    assert out["sessionKey"] == MAIN
    assert out["text"] == "Echo: three"
    assert out["usage"]["completion_tokens"] == 2
    # The gateway ran both turns on the main session: the second saw the first.
    assert len(fake.model_requests[-1].body["messages"]) == 3

    local_state = tmp_path / "local-state"
    for args in (["-m", "one two"], ["-m", "three", "--json"]):
        res = run_cli(["agent", "--local", *args], state=local_state, config=config)
        assert res.exit_code == 0, res.output
    assert res.stdout.startswith("{")
    assert orjson.loads(res.stdout)["sessionKey"] == MAIN
    assert len(fake.model_requests[-1].body["messages"]) == 3

    via_gateway = stored_messages(state_dir, config, MAIN, 4)
    via_local = stored_messages(local_state, config, MAIN, 4)
    assert len(via_gateway) == 4
    assert shape(via_gateway) == shape(via_local)

    listed = run_cli(["sessions", "list"], state=state_dir, config=config)
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "AGENT", "UPDATED"]
    assert row.startswith(MAIN) and "fake/fake-model" in row
    as_json = orjson.loads(
        run_cli(["sessions", "list", "--json"], state=state_dir, config=config).stdout
    )
    assert [s["key"] for s in as_json["sessions"]] == [MAIN]

    shown = run_cli(["sessions", "show", "main"], state=state_dir, config=config)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [
        "user: one two",
        "assistant: Echo: one two",
        "user: three",
        "assistant: Echo: three",
    ]
    missing = run_cli(["sessions", "show", "nope"], state=state_dir, config=config)
    assert missing.exit_code == 1
    assert "no session `agent:main:nope`" in missing.stderr


def test_cli_sessions_on_an_empty_state_dir_create_nothing(tmp_path: Path) -> None:
    state = tmp_path / "empty"
    state.mkdir()
    config = tmp_path / "absent.json"
    res = run_cli(["sessions", "list"], state=state, config=config)
    assert res.exit_code == 0
    assert "no sessions" in res.stdout
    res = run_cli(["sessions", "show", "agent:main:main"], state=state, config=config)
    assert res.exit_code == 1
    assert list(state.iterdir()) == []


def test_cli_agent_error_paths_are_clear(
    fake: FakeUpstream, gateway_factory, state_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = write_cli_config(tmp_path / "down.json", fake, port=closed_port, token=TOKEN)
    res = run_cli(["agent", "-m", "hi"], state=state_dir, config=config)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert f"cannot reach the gateway at ws://127.0.0.1:{closed_port}/" in res.stderr
    assert "openclaw gateway run" in res.stderr and "--local" in res.stderr
    assert "Traceback" not in res.output

    gw = gateway_factory(model_config(fake))
    config = write_cli_config(tmp_path / "up.json", fake, port=gw.port, token=TOKEN)
    res = run_cli(["agent", "-m", "hi", "--token", "wrong"], state=state_dir, config=config)
    assert res.exit_code == 1
    assert "rejected the token" in res.stderr and "--token" in res.stderr

    # No token in the config and none generated in this state dir.
    bare = write_cli_config(tmp_path / "bare.json", fake, port=gw.port, token=None)
    res = run_cli(["agent", "-m", "hi"], state=tmp_path / "other-state", config=bare)
    assert res.exit_code == 1
    assert "needs a token and none was found" in res.stderr

    fake.script(HttpError(400, "upstream says no"))
    res = run_cli(["agent", "-m", "hi"], state=state_dir, config=config)
    assert res.exit_code == 1
    assert "upstream says no" in res.stderr
    assert "Traceback" not in res.output

    res = run_cli(
        ["agent", "-m", "hi", "--session-key", "agent:Bad:x"], state=state_dir, config=config
    )
    assert res.exit_code == 1
    assert "Invalid session key" in res.stderr


def test_console_script_streams_deltas_as_they_arrive(
    fake: FakeUpstream, gateway_factory, state_dir: Path, tmp_path: Path
) -> None:
    gw = gateway_factory(model_config(fake))
    config = write_cli_config(tmp_path / "openclaw.json", fake, port=gw.port, token=TOKEN)
    fake.script(slow_stream(chunks=4, delay=1.0))  # the rest takes 3 s: room for a loaded machine
    exe = Path(sys.executable).with_name("openclaw")
    assert exe.exists(), exe
    env = {**os.environ, "OPENCLAW_STATE_DIR": str(state_dir), "OPENCLAW_CONFIG_PATH": str(config)}
    env.pop("PYTHONUNBUFFERED", None)  # stdout is a pipe: only explicit flushes get text out early
    with subprocess.Popen(
        [str(exe), "agent", "--message", "go"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.read(3)
        # The first word is on stdout while the rest of the reply is still being generated.
        assert first == b"w0 "
        assert proc.poll() is None
        rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert first + rest == b"w0 w1 w2 w3\n"


def test_ws_method_failing_on_an_os_error_still_answers_and_logs(
    fake: FakeUpstream, gateway_factory, ws_to, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an OSError inside a method (here a transcript that cannot be read) used to
    be taken for the client leaving: no reply frame, no log line."""
    gw = gateway_factory(model_config(fake))
    ws = ws_to(gw)
    _, res = ws.call("agent", {"message": "hello"})
    assert res["ok"] is True
    [path] = (gw.state_dir / "agents" / "main" / "sessions").glob("*.jsonl")
    path.unlink()
    path.mkdir()  # reading it now fails with IsADirectoryError, an OSError
    with caplog.at_level(logging.ERROR, logger="openclaw"):
        _, res = ws.call("sessions.history", {"sessionKey": MAIN})
    assert res["ok"] is False
    assert res["error"]["code"] == "store_unavailable"
    assert any("IsADirectoryError" in str(r.__dict__.get("error", "")) for r in caplog.records)
    # Any method's raw OSError too: answered as an internal error, logged with its traceback.

    async def fails(conn: object, params: dict[str, Any]) -> None:
        raise PermissionError(13, "Permission denied", "/state/agents/main/sessions/x.jsonl")

    gw.app.state.ws_methods["test.fails"] = fails
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="openclaw"):
        _, res = ws.call("test.fails")
    assert res["ok"] is False
    assert res["error"] == {
        "code": "server_error",
        "type": "server_error",
        "message": "The server had an error processing your request.",
    }
    assert any(r.exc_info and r.exc_info[0] is PermissionError for r in caplog.records)
    # The connection goes on.
    _, listed = ws.call("sessions.list")
    assert listed["ok"] is True
