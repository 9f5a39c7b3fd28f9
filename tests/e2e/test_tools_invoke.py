"""``POST /tools/invoke`` over real sockets: results, the agent's policy plus the HTTP deny list,
dry runs, and every error status with its ``{ok: false, error}`` body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import tools_config
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream


def invoke(gw: RunningGateway, body: Any, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", gw.auth_headers())
    return httpx.post(gw.url + "/tools/invoke", json=body, headers=headers, timeout=10, **kw)


@pytest.fixture
def gw(upstream: FakeUpstream, gateway_factory) -> RunningGateway:
    cfg = tools_config(upstream)
    cfg["agents"]["list"] = [
        {"id": "main", "default": True},
        {"id": "beta", "tools": {"deny": ["read"]}},
    ]
    return gateway_factory(cfg)


def test_a_tool_runs_and_answers_ok(gw: RunningGateway) -> None:
    workspace = gw.state_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    (workspace / "hello.txt").write_text("hello from the workspace\n")
    res = invoke(gw, {"tool": "read", "args": {"path": "hello.txt"}})
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert body["ok"] is True
    result = body["result"]
    assert result["text"] == "hello from the workspace\n"
    assert result["isError"] is False
    assert result["details"]["path"] == "hello.txt"
    assert isinstance(result["durationMs"], int)
    # A tool's own failure is a result, not an HTTP error.
    res = invoke(gw, {"tool": "read", "args": {"path": "../../etc/passwd"}})
    assert res.status_code == 200
    assert res.json()["result"]["isError"] is True


def test_names_are_case_insensitive_and_unknown_agents_are_400(gw: RunningGateway) -> None:
    assert invoke(gw, {"tool": "LS"}).json()["ok"] is True
    res = invoke(gw, {"tool": "ls", "sessionKey": "agent:nobody:main"})
    assert res.status_code == 400
    assert "Unknown agent `nobody`" in res.json()["error"]["message"]


def test_the_session_key_picks_the_agent_and_its_policy(gw: RunningGateway) -> None:
    res = invoke(gw, {"tool": "ls", "sessionKey": "agent:beta:main"})
    assert res.status_code == 200 and res.json()["ok"] is True
    res = invoke(gw, {"tool": "read", "args": {"path": "x"}, "sessionKey": "agent:beta:main"})
    assert res.status_code == 404
    assert res.json() == {
        "ok": False,
        "error": {"type": "tool_not_found", "message": "Tool `read` is not available here."},
    }


@pytest.mark.parametrize("tool", ["exec", "write", "edit", "nope"])
def test_host_changing_and_unknown_tools_are_404(gw: RunningGateway, tool: str) -> None:
    workspace = gw.state_dir / "workspace"
    res = invoke(gw, {"tool": tool, "args": {"command": "ls", "path": "x", "content": "y"}})
    assert res.status_code == 404
    assert res.json()["ok"] is False
    assert not (workspace / "x").exists()


def test_gateway_tools_adjusts_the_http_deny_list(upstream: FakeUpstream, gateway_factory) -> None:
    cfg = tools_config(upstream)
    cfg["gateway"]["tools"] = {"allow": ["write"], "deny": ["ls"]}
    gw = gateway_factory(cfg)
    res = invoke(gw, {"tool": "write", "args": {"path": "w.txt", "content": "ok"}})
    assert res.status_code == 200 and res.json()["result"]["isError"] is False
    assert (gw.state_dir / "workspace" / "w.txt").read_text() == "ok"
    assert invoke(gw, {"tool": "ls"}).status_code == 404
    assert invoke(gw, {"tool": "exec", "args": {"command": "ls"}}).status_code == 404


def test_dry_run_checks_arguments_without_running(gw: RunningGateway) -> None:
    res = invoke(gw, {"tool": "read", "args": {"path": "missing.txt"}, "dryRun": True})
    assert res.status_code == 200
    assert res.json() == {
        "ok": True,
        "result": {"dryRun": True, "tool": "read", "args": {"path": "missing.txt"}},
    }
    res = invoke(gw, {"tool": "read", "args": {"path": 5}, "dryRun": True})
    assert res.status_code == 400
    assert res.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"args": {}}, "tool"),
        ({"tool": ""}, "tool"),
        ({"tool": 5}, "tool"),
        ({"tool": "read", "args": "x"}, "args"),
        ({"tool": "read", "args": {}}, "path"),
        ({"tool": "read", "dryRun": "yes"}, "dryRun"),
        ({"tool": "ls", "sessionKey": "agent:"}, "sessionKey"),
        ([1, 2], ""),
    ],
)
def test_bad_input_is_400(gw: RunningGateway, body: Any, where: str) -> None:
    res = invoke(gw, body)
    assert res.status_code == 400, res.text
    out = res.json()
    assert out["ok"] is False
    assert out["error"]["type"] == "invalid_request_error"
    assert where in out["error"]["message"]


def test_not_json_and_too_large_bodies(gw: RunningGateway) -> None:
    res = httpx.post(
        gw.url + "/tools/invoke", content=b"{not json", headers=gw.auth_headers(), timeout=10
    )
    assert res.status_code == 400 and res.json()["ok"] is False
    big = {"tool": "ls", "args": {"path": "x" * (2 * 1024 * 1024)}}
    res = invoke(gw, big)
    assert res.status_code == 413
    assert res.json()["ok"] is False


def test_auth_and_method(gw: RunningGateway) -> None:
    res = invoke(gw, {"tool": "ls"}, headers={})
    assert res.status_code == 401
    assert res.json()["ok"] is False and res.json()["error"]["type"] == "invalid_api_key"
    res = invoke(gw, {"tool": "ls"}, headers={"Authorization": "Bearer wrong"})
    assert res.status_code == 401
    res = httpx.get(gw.url + "/tools/invoke", headers=gw.auth_headers(), timeout=10)
    assert res.status_code == 405
    assert res.headers["allow"] == "POST"
    assert res.json()["ok"] is False


def test_secrets_are_masked_in_results(gw: RunningGateway) -> None:
    workspace = gw.state_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    (workspace / "leak.txt").write_text(f"token={gw.token}")
    res = invoke(gw, {"tool": "read", "args": {"path": "leak.txt"}})
    assert gw.token not in res.text
    assert res.json()["result"]["text"] == "token=[REDACTED]"
