"""The tool loop's bounds and guarantees over real sockets: max rounds, loop detection, the run's
deadline over tools, a client leaving during a command (its process group killed), secrets kept
out of what tools see and return, web_fetch's guard, tool progress on the chat stream, and the
loop on the Anthropic API."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    ask,
    call,
    client,
    tool_messages,
    tools_config,
    transcripts,
    wait_for,
)
from tests.harness import process_group_alive
from tests.upstream import Answer, FakeUpstream, ToolCalls


def test_max_rounds_then_one_last_call_without_tools(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream, maxRounds=2))
    upstream.script(ToolCalls(calls=(call("ls"),)), ToolCalls(calls=(call("ls", path="."),)))
    reply = ask(gw, "loop", user="rounds")
    requests = upstream.model_requests
    assert len(requests) == 3
    last = requests[-1].body
    assert last["tool_choice"] == "none"
    note = last["messages"][-1]
    assert note["role"] == "user" and "limit of 2 tool rounds" in note["content"]
    assert len(tool_messages(last)) == 2
    assert reply == "Echo: " + note["content"]  # the fake answers the note


def test_a_model_calling_tools_past_the_limit_gets_them_refused(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream, maxRounds=2))
    upstream.default = ToolCalls(calls=(call("ls"),), text="Looking.")
    # Its last answer still calls a tool: it does not run, the reply is what the model said.
    assert ask(gw, "loop", user="said") == "\n\n".join(["Looking."] * 3)
    upstream.default = ToolCalls(calls=(call("ls"),))
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="openclaw", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.body["code"] == "max_rounds"  # type: ignore[index]
    assert len(upstream.model_requests) == 6
    # Every call keeps a result: the refused ones are answered with an error in the transcript,
    # so the session's next turn is a valid conversation.
    [records] = transcripts(gw.state_dir)
    assert [r["role"] for r in records] == ["user", *(["assistant", "tool"] * 3)]
    assert records[-1]["meta"]["isError"] is True
    assert records[-1]["content"] == "Not run: this run reached its limit of 2 tool rounds."
    upstream.default = Answer()
    assert ask(gw, "so?", user="said") == "Echo: so?"
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", *(["assistant", "tool"] * 3), "user"]
    assert all(
        m["tool_call_id"] == sent[i - 1]["tool_calls"][0]["id"]
        for i, m in enumerate(sent)
        if m["role"] == "tool"
    )


def test_client_calls_at_the_limit_still_go_back(upstream: FakeUpstream, gateway_factory) -> None:
    gw = gateway_factory(tools_config(upstream, maxRounds=1))
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    upstream.script(
        ToolCalls(calls=(call("ls"),)),
        ToolCalls(calls=(call("ls", path="."), call("get_weather", city="Oslo"))),
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    with client(gw) as c:
        reply = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[weather], user="edge"
        )
        [mine] = reply.choices[0].message.tool_calls or []
        assert reply.choices[0].finish_reason == "tool_calls"
        messages += [
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": mine.id, "content": "sunny"},
        ]
        upstream.default = Answer()
        final = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[weather], user="edge"
        )
    assert final.choices[0].message.content == "Echo: tool sunny"
    # The transcript agreed with the client: the earlier round is still what the model sees.
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "tool", "tool"]
    [records] = transcripts(gw.state_dir)
    assert not [r for r in records if (r.get("meta") or {}).get("type") == "history-reset"]


def test_tool_arguments_are_masked_in_the_transcript(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(ToolCalls(calls=(call("exec", command=f"echo {gw.token}"),)))
    reply = ask(gw, "say it", user="masked")
    assert gw.token not in reply
    stored = json.dumps(transcripts(gw.state_dir))
    assert gw.token not in stored and "echo [REDACTED]" in stored


def test_loop_detection_answers_repeats_with_an_error(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream, loopDetection={"maxRepeats": 2}))
    upstream.script(*[ToolCalls(calls=(call("ls", path="."),))] * 3)
    reply = ask(gw, "again and again", user="loops")
    assert "already called 2 times" in reply
    [records] = transcripts(gw.state_dir)
    results = [r for r in records if r["role"] == "tool"]
    assert [r["meta"]["isError"] for r in results] == [False, False, True]
    # Counted per run: the next run may call it again.
    upstream.script(ToolCalls(calls=(call("ls", path="."),)))
    assert "already called" not in ask(gw, "once more", user="loops")


def test_the_runs_deadline_covers_tools(upstream: FakeUpstream, gateway_factory) -> None:
    cfg = tools_config(upstream, exec={"security": "full"})
    # Long enough for the model's answer and the command's start on a loaded machine; the
    # command would run a minute.
    cfg["agents"]["defaults"]["timeoutSeconds"] = 4
    gw = gateway_factory(cfg)
    workspace = gw.state_dir / "workspace"
    upstream.script(ToolCalls(calls=(call("exec", command="echo $$ > pgid; sleep 60"),)))
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="openclaw", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504
    assert "timeout of 4 s while tools ran" in str(info.value)
    pgid = int(wait_for(lambda: (workspace / "pgid").read_text().strip()))
    assert wait_for(lambda: not process_group_alive(pgid))


def test_a_client_leaving_during_a_command_kills_its_process_group(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream, exec={"security": "full"}))
    pgid_file = gw.state_dir / "workspace" / "pgid"
    upstream.script(
        ToolCalls(calls=(call("exec", command="echo $$ > pgid; sleep 300 & sleep 300"),))
    )
    body = {
        "model": "openclaw",
        "user": "leaver",
        "stream": True,
        "messages": [{"role": "user", "content": "long job"}],
    }
    headers = {**gw.auth_headers(), "x-openclaw-tool-events": "1"}
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        for line in response.iter_lines():
            if '"openclaw_tool"' in line and '"start"' in line:
                break
        assert wait_for(pgid_file.exists)
        pgid = int(wait_for(lambda: pgid_file.read_text().strip()))
        assert process_group_alive(pgid)
    # The connection is closed: the run is cancelled, the command's whole group killed.
    left = time.monotonic()
    assert wait_for(lambda: not process_group_alive(pgid))
    print(f"process group gone {time.monotonic() - left:.3f} s after the client left")

    def stored() -> list[dict[str, Any]] | None:
        found = transcripts(gw.state_dir)
        return found[0] if found and found[0][-1]["role"] == "assistant" else None

    records = wait_for(stored)
    assert records, "the aborted turn was not stored"
    assert records[-1]["stopReason"] == "aborted"
    assert records[-1]["meta"]["toolCalls"][0]["function"]["name"] == "exec"


def test_secrets_stay_out_of_tools(
    upstream: FakeUpstream, gateway_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway_factory(tools_config(upstream, exec={"security": "full"}))
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", gw.token)
    monkeypatch.setenv("COPIED_TOKEN", f"Bearer {gw.token}")
    monkeypatch.setenv("PROVIDER_KEY", "upstream-key")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    workspace = gw.state_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    (workspace / "notes.txt").write_text(f"token: {gw.token}\nkey: upstream-key\n")
    upstream.script(
        ToolCalls(calls=(call("exec", command="env"), call("read", path="notes.txt"))),
    )
    reply = ask(gw, "show me", user="secrets")
    env_result, read_result = (
        m["content"] for m in tool_messages(upstream.model_requests[-1].body)
    )
    # exec's environment is scrubbed of every credential...
    assert "HARMLESS_SETTING=visible" in env_result
    for name in ("OPENCLAW_GATEWAY_TOKEN", "COPIED_TOKEN", "PROVIDER_KEY"):
        assert name not in env_result
    # ...and any tool's result is masked before the model, the transcript or the client see it.
    assert read_result == "token: [REDACTED]\nkey: [REDACTED]\n"
    stored = json.dumps(transcripts(gw.state_dir))
    for where in (env_result, read_result, reply, stored):
        assert gw.token not in where and "upstream-key" not in where


def test_web_fetch_refuses_loopback_without_the_override(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(ToolCalls(calls=(call("web_fetch", url=upstream.base_url + "/models"),)))
    reply = ask(gw, "fetch it")
    assert reply.startswith("Echo: tool Could not fetch")
    assert "private" in reply or "loopback" in reply
    # The upstream was never asked for the page.
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2


@pytest.mark.parametrize("how", ["header", "config"])
def test_tool_progress_on_the_chat_stream_when_asked(
    upstream: FakeUpstream, gateway_factory, how: str
) -> None:
    cfg = tools_config(upstream)
    if how == "config":
        cfg["gateway"]["http"]["endpoints"]["chatCompletions"]["toolEvents"] = True
    gw = gateway_factory(cfg)
    headers = {"x-openclaw-tool-events": "1"} if how == "header" else {}
    upstream.script(ToolCalls(calls=(call("ls"),)))
    with client(gw) as c:
        chunks = list(
            c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "list"}],
                stream=True,
                extra_headers=headers,
            )
        )
    events = [
        ch.model_extra["openclaw_tool"]
        for ch in chunks
        if "openclaw_tool" in (ch.model_extra or {})
    ]
    assert [e["phase"] for e in events] == ["start", "result"]
    assert events[0] == {"phase": "start", "toolCallId": "call_0", "name": "ls", "args": {}}
    assert set(events[1]) == {"phase", "toolCallId", "name", "isError", "durationMs", "summary"}
    for ch in chunks:
        if "openclaw_tool" in (ch.model_extra or {}):
            assert ch.object == "chat.completion.chunk"
            [choice] = ch.choices
            assert choice.index == 0 and choice.finish_reason is None
            assert choice.delta.content is None and choice.delta.tool_calls is None
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_no_tool_progress_by_default(upstream: FakeUpstream, gateway_factory) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(ToolCalls(calls=(call("ls"),)))
    with client(gw) as c:
        chunks = list(
            c.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "list"}], stream=True
            )
        )
    assert not [ch for ch in chunks if "openclaw_tool" in (ch.model_extra or {})]
    assert all(
        ch.choices[0].delta.content or ch.choices[0].finish_reason or ch.choices[0].delta.role
        for ch in chunks
    )


def test_the_loop_on_the_anthropic_api(gateway_factory) -> None:
    with FakeUpstream(api_key="sk-ant-test") as up:
        cfg = tools_config(up)
        cfg["models"] = {
            "providers": {
                "claude": {
                    "api": "anthropic-messages",
                    "baseUrl": up.root_url,
                    "apiKey": "sk-ant-test",
                    "maxRetries": 0,
                    "models": [{"id": "claude-test"}],
                }
            }
        }
        cfg["agents"]["defaults"]["model"] = "claude/claude-test"
        gw = gateway_factory(cfg)
        up.script(
            ToolCalls(calls=(call("write", path="c.txt", content="from claude"),), text="Sure.")
        )
        for stream in (False, True):
            reply = ask(gw, "write it", stream=stream)
            assert reply == "Sure.\n\nEcho: tool Wrote 11 bytes to c.txt."
            if not stream:
                up.script(
                    ToolCalls(
                        calls=(call("write", path="c.txt", content="from claude"),), text="Sure."
                    )
                )
        first, second = up.model_requests[:2]
        assert {t["name"] for t in first.body["tools"]} >= {"read", "write", "exec"}
        blocks = second.body["messages"][-1]["content"]
        assert blocks[0]["type"] == "tool_result" and blocks[0]["tool_use_id"] == "toolu_0"
        assert (gw.state_dir / "workspace" / "c.txt").read_text() == "from claude"


def test_keep_alive_comments_go_on_while_a_tool_runs(
    upstream: FakeUpstream, gateway_factory
) -> None:
    cfg = tools_config(upstream, exec={"security": "full"})
    cfg["gateway"]["http"]["sseKeepaliveMs"] = 20
    gw = gateway_factory(cfg)
    go = gw.state_dir / "workspace" / "go"
    command = "while [ ! -f go ]; do sleep 0.01; done; echo released"
    upstream.script(ToolCalls(calls=(call("exec", command=command),)))
    body = {"model": "openclaw", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    headers = {**gw.auth_headers(), "x-openclaw-tool-events": "1"}
    lines = []
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        started = False
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(line)
            started = started or ('"openclaw_tool"' in line and '"start"' in line)
            if started and line == ": keep-alive" and not go.exists():
                go.touch()  # the command may end only after a keep-alive came during it
    assert lines[-1] == "data: [DONE]"
    done = next(i for i, line in enumerate(lines) if '"result"' in line and "openclaw_tool" in line)
    assert ": keep-alive" in lines[:done]
    assert any("released" in line for line in lines)
