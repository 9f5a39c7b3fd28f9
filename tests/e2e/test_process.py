"""The real `openclaw` command in its own process: start-up line, the documentation's curl
examples on the embedded offline model and on an upstream, graceful shutdown with a request in
flight."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.processes import ENABLED, TOKEN, upstream_models
from tests.e2e.rawhttp import request
from tests.upstream import Answer, FakeUpstream


def curl(port: int, stream: bool) -> subprocess.CompletedProcess[str]:
    body = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    args = ["curl", "-sS"] + (["-N"] if stream else [])
    args += [
        f"http://127.0.0.1:{port}/v1/chat/completions",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        "-H",
        "Content-Type: application/json",
        "-H",
        "x-openclaw-agent-id: main",
        "-d",
        json.dumps(body),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def _check_curl_examples(port: int) -> str:
    plain = json.loads(curl(port, stream=False).stdout)
    text = plain["choices"][0]["message"]["content"]
    assert text.strip()
    assert plain["usage"]["completion_tokens"] > 0
    assert plain["usage"]["prompt_tokens"] > 0
    streamed = curl(port, stream=True).stdout
    events = [line[6:] for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if json.loads(e)["choices"]
    )
    assert deltas.strip()
    return text


@needs_curl
def test_doc_curl_examples_on_the_embedded_offline_model(spawn) -> None:
    gw = spawn(ENABLED)
    assert "endpoints: health, ws, toolsInvoke, chatCompletions, models" in gw.log
    assert "auth: token" in gw.log
    text = _check_curl_examples(gw.port)
    assert any(c.isalpha() for c in text)  # real generated words, not a canned string
    assert gw.stop() == 0
    assert "local model loaded" in gw.log
    assert TOKEN not in gw.log


@needs_curl
def test_doc_curl_examples_on_a_configured_upstream(spawn) -> None:
    with FakeUpstream() as up:
        cfg = {
            **ENABLED,
            "models": upstream_models(up),
        }
        gw = spawn(cfg)
        assert _check_curl_examples(gw.port) == "Echo: hi"
        assert gw.stop() == 0


def test_graceful_shutdown_lets_an_in_flight_request_finish(spawn) -> None:
    with FakeUpstream() as up:
        cfg = {
            **ENABLED,
            "models": upstream_models(up),
            "agents": {"defaults": {"model": "up/m"}},
        }
        gw = spawn(cfg)
        up.script(Answer(first_token_delay=1.0))
        result: dict = {}

        def call() -> None:
            body = json.dumps(
                {
                    "model": "openclaw",
                    "messages": [{"role": "user", "content": "slow"}],
                    "user": "s",
                }
            )
            result["reply"] = request(
                gw.port,
                "POST",
                "/v1/chat/completions",
                body=body.encode(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )

        t = threading.Thread(target=call)
        t.start()
        assert up.wait_for_requests(1, timeout=10)
        gw.proc.send_signal(signal.SIGTERM)
        t.join(30)
        reply = result["reply"]
        assert reply.status == 200
        assert reply.json()["choices"][0]["message"]["content"] == "Echo: slow"
        assert gw.wait() == 0  # the one SIGTERM ends it (stop() would send a second)
        gw.stop()
        assert "shutting down" in gw.log
        assert "gateway stopped" in gw.log
        # The turn was stored before the stores closed.
        files = list(
            (Path(gw.env["OPENCLAW_STATE_DIR"]) / "agents" / "main" / "sessions").glob("*.jsonl")
        )
        lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
        assert [r["role"] for r in lines] == ["user", "assistant"]


def test_shutdown_cancels_requests_that_outlive_the_bound(spawn) -> None:
    with FakeUpstream() as up:
        cfg = {
            "gateway": {**ENABLED["gateway"], "shutdownTimeoutMs": 1000},
            "models": upstream_models(up),
        }
        gw = spawn(cfg)
        up.script(Answer(first_token_delay=60))

        def call() -> None:
            body = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": "x"}]})
            with contextlib.suppress(OSError):
                request(
                    gw.port,
                    "POST",
                    "/v1/chat/completions",
                    body=body.encode(),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                )

        t = threading.Thread(target=call, daemon=True)
        t.start()
        assert up.wait_for_requests(1, timeout=10)
        assert gw.stop() == 0  # within shutdownTimeoutMs, not the 60 s the upstream would take
        assert up.wait_for_disconnect(timeout=30)


def test_invalid_config_stops_start_up_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{gateway: {auth: {mode: "magic"}}}')
    env = {**os.environ, "OPENCLAW_CONFIG_PATH": str(path), "OPENCLAW_STATE_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "openclaw", "gateway", "run", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert (
        'gateway.auth.mode: expected "token", "password", "none" or "trusted-proxy"' in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_lan_bind_without_secret_refuses_with_advice(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env |= {
        "OPENCLAW_CONFIG_PATH": str(tmp_path / "none.json"),
        "OPENCLAW_STATE_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "openclaw", "gateway", "run", "--port", "0", "--bind", "lan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "openclaw config set gateway.auth.token" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_graceful_shutdown_lets_a_websocket_run_finish(spawn) -> None:
    from websockets.sync.client import connect

    with FakeUpstream() as up:
        cfg = {
            **ENABLED,
            "models": upstream_models(up),
        }
        gw = spawn(cfg)
        up.script(Answer(first_token_delay=1.0))
        with connect(f"ws://127.0.0.1:{gw.port}/") as ws:
            auth = {
                "type": "req",
                "id": "c",
                "method": "connect",
                "params": {"auth": {"token": TOKEN}},
            }
            ws.send(json.dumps(auth))
            assert json.loads(ws.recv(timeout=10))["ok"] is True
            ws.send(
                json.dumps(
                    {"type": "req", "id": "a", "method": "agent", "params": {"message": "slow ws"}}
                )
            )
            assert up.wait_for_requests(1, timeout=10)
            gw.proc.send_signal(signal.SIGTERM)
            while True:
                frame = json.loads(ws.recv(timeout=20))
                if frame.get("type") == "res" and frame.get("id") == "a":
                    break
        assert frame["ok"] is True
        assert frame["payload"]["text"] == "Echo: slow ws"
        # The one SIGTERM ends it cleanly once the run is done (stop() would send a second,
        # which forces the exit, if it came while the gateway is still closing down).
        assert gw.wait() == 0
        gw.stop()


def test_a_taken_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "OPENCLAW_CONFIG_PATH": str(tmp_path / "none.json"),
            "OPENCLAW_STATE_DIR": str(tmp_path),
            "OPENCLAW_GATEWAY_TOKEN": TOKEN,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "openclaw", "gateway", "run", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert "address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_open_file_limit_is_raised_to_the_hard_limit(spawn) -> None:
    # Many machines start processes at 1,024 open files: a few hundred streams.
    gw = spawn(ENABLED, nofile=(256, 2048))
    limits = Path(f"/proc/{gw.proc.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == ["2048", "2048"]
    assert "open-file limit raised from 256 to 2048" in gw.log
    assert "about 1024 concurrent streams at most" in gw.log  # and still low: said so
