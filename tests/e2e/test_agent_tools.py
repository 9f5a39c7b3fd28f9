"""Agents that act, over real sockets: the suite's upstream calls the gateway's tools, the gateway
runs them and feeds the results back, until an answer calls none; on chat completions (streamed
and not), the WebSocket and ``openclaw agent``; client and server tools side by side; the
transcript and the history the next turn replays."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from openclaw.cli.main import cli
from tests.e2e.conftest import (
    CODING_TOOLS,
    ask,
    call,
    client,
    tool_messages,
    tools_config,
    transcripts,
)
from tests.upstream import Answer, FakeUpstream, ToolCalls
from tests.upstream.behaviours import count_words


class _Page(BaseHTTPRequestHandler):
    BODY = (
        b"<html><head><title>Field notes</title></head><body><nav>Home | About</nav>"
        b"<article><h1>Field notes</h1><p>The heron returns to the pond every spring, "
        b"usually in the second week of March, and stays until the first frost.</p>"
        b"<p>Observers counted eleven nests this year.</p></article></body></html>"
    )

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/notes.html"
    server.shutdown()
    server.server_close()


# --- every tool through the loop ----------------------------------------------------------------


@pytest.mark.parametrize("door", ["json", "stream", "websocket"])
def test_every_tool_through_the_loop(
    upstream: FakeUpstream, gateway_factory, ws_to, page_url: str, door: str
) -> None:
    gw = gateway_factory(tools_config(upstream, webFetch={"allowPrivateNetwork": True}))
    workspace = gw.state_dir / "workspace"
    assert ask(gw, "remember this", extra_headers={"x-openclaw-session-key": "earlier"}) == (
        "Echo: remember this"
    )
    steps = [
        (call("write", path="notes/todo.md", content="buy milk\n"), "Wrote 9 bytes"),
        (call("read", path="notes/todo.md"), "buy milk"),
        (call("edit", path="notes/todo.md", oldText="milk", newText="oat milk"), "Edited"),
        (call("ls", path="notes"), "todo.md"),
        (call("exec", command="cat notes/todo.md"), "buy oat milk"),
        (
            call(
                "write", path="memory/2026-11-29.md", content="# Day\nThe key is under the mat.\n"
            ),
            "Wrote",
        ),
        (call("memory_search", query="key mat"), '"path":"memory/2026-11-29.md"'),
        (call("memory_get", path="memory/2026-11-29.md", **{"from": 2, "lines": 1}), "the mat"),
        (call("web_fetch", url=page_url), "heron returns to the pond"),
        (call("sessions_list"), "agent:main:earlier"),
        (call("sessions_history", sessionKey="earlier"), "Echo: remember this"),
    ]
    upstream.script(*(ToolCalls(calls=(c,)) for c, _ in steps))
    first = len(upstream.model_requests)

    if door == "websocket":
        _, res = ws_to(gw).call("agent", {"message": "do the chores", "sessionKey": "actor"})
        assert res["ok"] is True, res
        reply = res["payload"]["text"]
    else:
        reply = ask(gw, "do the chores", stream=door == "stream", user="actor")

    requests = upstream.model_requests[first:]
    assert len(requests) == len(steps) + 1
    offered = {t["function"]["name"] for t in requests[0].body["tools"]}
    assert offered == CODING_TOOLS
    for i, (_, expected) in enumerate(steps):
        fed = tool_messages(requests[i + 1].body)
        assert len(fed) == i + 1  # every earlier result stays in the conversation
        assert fed[-1]["tool_call_id"] == "call_0"
        assert expected in fed[-1]["content"], (steps[i], fed[-1]["content"])
    assert (workspace / "notes" / "todo.md").read_text() == "buy oat milk\n"
    assert reply == "Echo: tool " + " ".join(
        tool_messages(requests[-1].body)[-1]["content"].split()
    )

    # Stored before the reply: the user's message, each round's call and result, the answer.
    [turn] = [t for t in transcripts(gw.state_dir) if any(r["role"] == "tool" for r in t)]
    roles = [r["role"] for r in turn]
    assert roles == ["user", *(["assistant", "tool"] * len(steps)), "assistant"]
    results = [r for r in turn if r["role"] == "tool"]
    assert [r["meta"]["toolName"] for r in results] == [c[0] for c, _ in steps]
    for r, (c, expected) in zip(results, steps, strict=True):
        assert r["meta"]["isError"] is False
        assert isinstance(r["meta"]["durationMs"], int)
        assert json.loads(r["meta"]["arguments"]) == json.loads(c[1])
        assert expected in r["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_rounds_texts_joined_and_usage_summed(
    upstream: FakeUpstream, gateway_factory, stream: bool
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(ToolCalls(calls=(call("ls"),), text="Let me look."))
    kw: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    with client(gw) as c:
        messages = [{"role": "user", "content": "what is here?"}]
        if stream:
            chunks = list(
                c.chat.completions.create(model="openclaw", messages=messages, stream=True, **kw)
            )
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            usage = chunks[-1].usage
        else:
            reply = c.chat.completions.create(model="openclaw", messages=messages)
            text, usage = reply.choices[0].message.content or "", reply.usage
    first, second = upstream.model_requests
    listing = tool_messages(second.body)[0]["content"]
    final = "Echo: tool " + " ".join(listing.split())
    # Each round's text in order, a blank line between: exactly what the stream showed.
    assert text == "Let me look.\n\n" + final
    assert usage is not None
    assert usage.prompt_tokens == count_words(first.body["messages"]) + count_words(
        second.body["messages"]
    )
    assert usage.completion_tokens == (1 + 3) + len(final.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_several_calls_of_one_answer_run_concurrently_results_in_call_order(
    upstream: FakeUpstream, gateway_factory
) -> None:
    # Each command waits for the other's file: run one after the other, neither would end
    # (until the exec timeout, which fails the test).
    gw = gateway_factory(tools_config(upstream, exec={"security": "full", "timeoutSeconds": 30}))
    a = "touch a; while [ ! -f b ]; do sleep 0.01; done; echo first"
    b = "touch b; while [ ! -f a ]; do sleep 0.01; done; sleep 0.2; echo second"
    upstream.script(ToolCalls(calls=(call("exec", command=a), call("exec", command=b))))
    reply = ask(gw, "both at once")
    fed = tool_messages(upstream.model_requests[-1].body)
    assert [m["tool_call_id"] for m in fed] == ["call_0", "call_1"]
    assert fed[0]["content"].startswith("first\n") and fed[1]["content"].startswith("second\n")
    assert reply.startswith("Echo: tool second")


def test_websocket_agent_streams_tool_events(
    upstream: FakeUpstream, gateway_factory, ws_to
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(
        ToolCalls(calls=(call("write", path="a.txt", content="alpha"), call("read", path="nope")))
    )
    events, res = ws_to(gw).call("agent", {"message": "go"})
    assert res["ok"] is True, res
    result = res["payload"]
    assert result["text"].startswith("Echo: tool ")
    payloads = [e["payload"] for e in events]
    tools = [p["data"] for p in payloads if p["stream"] == "tool"]
    starts = [t for t in tools if t["phase"] == "start"]
    ends = [t for t in tools if t["phase"] == "result"]
    assert starts == [
        {
            "phase": "start",
            "toolCallId": "call_0",
            "name": "write",
            "args": {"path": "a.txt", "content": "alpha"},
        },
        {"phase": "start", "toolCallId": "call_1", "name": "read", "args": {"path": "nope"}},
    ]
    assert sorted(e["toolCallId"] for e in ends) == ["call_0", "call_1"]
    for end in ends:
        assert set(end) == {"phase", "toolCallId", "name", "isError", "durationMs", "summary"}
    by_id = {e["toolCallId"]: e for e in ends}
    assert by_id["call_0"]["isError"] is False and by_id["call_0"]["summary"].startswith("Wrote 5")
    assert by_id["call_1"]["isError"] is True
    # Tool events come between the run's start and end, before the answer's text.
    streams = [p["stream"] for p in payloads]
    assert streams[0] == "lifecycle" and streams[-1] == "lifecycle"
    assert streams.index("assistant") > max(i for i, s in enumerate(streams) if s == "tool")
    assert (gw.state_dir / "workspace" / "a.txt").read_text() == "alpha"


@pytest.mark.parametrize("local", [False, True], ids=["gateway", "local"])
def test_openclaw_agent_prints_one_line_per_tool_call(
    upstream: FakeUpstream, gateway_factory, tmp_path: Path, local: bool
) -> None:
    gw = gateway_factory(tools_config(upstream))
    config = tmp_path / "cli.json"
    auth = {"mode": "token", "token": gw.token}
    # --local runs the agent in the CLI's own process, on the same config.
    config.write_text(
        json.dumps({**tools_config(upstream), "gateway": {"port": gw.port, "auth": auth}})
    )
    state = tmp_path / "cli-state"
    upstream.script(ToolCalls(calls=(call("write", path="x.md", content="hi"),), text="Writing."))
    env = {"OPENCLAW_STATE_DIR": str(state), "OPENCLAW_CONFIG_PATH": str(config)}
    res = CliRunner().invoke(
        cli, ["agent", "-m", "write it", *(["--local"] if local else [])], env=env
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "Writing."
    assert lines[1].startswith('[tool write {"path":"x.md","content":"hi"}: ok, ')
    assert lines[1].endswith(" ms]")
    assert lines[2:] == ["Echo: tool Wrote 2 bytes to x.md."]
    workspace = (state if local else gw.state_dir) / "workspace"
    assert (workspace / "x.md").read_text() == "hi"


# --- client and server tools --------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_server_calls_run_then_client_calls_go_back(
    upstream: FakeUpstream, gateway_factory, stream: bool
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(
        ToolCalls(
            calls=(call("write", path="log.txt", content="asked"), call("get_weather", city="Oslo"))
        )
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    with client(gw) as c:
        if stream:
            chunks = list(
                c.chat.completions.create(
                    model="openclaw", messages=messages, tools=[WEATHER], stream=True, user="mix"
                )
            )
            deltas = [
                tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []
            ]
            assert {d.index for d in deltas} == {0}  # the client's calls, numbered as its own
            assert [d.function.name for d in deltas if d.function and d.function.name] == [
                "get_weather"
            ]
            call_id = next(d.id for d in deltas if d.id)
            finish = chunks[-1].choices[0].finish_reason
        else:
            reply = c.chat.completions.create(
                model="openclaw", messages=messages, tools=[WEATHER], user="mix"
            )
            [mine] = reply.choices[0].message.tool_calls or []
            assert mine.function.name == "get_weather"
            call_id, finish = mine.id, reply.choices[0].finish_reason
        assert finish == "tool_calls"
        # The server's call ran before the run ended.
        assert (gw.state_dir / "workspace" / "log.txt").read_text() == "asked"
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ]
        final = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], user="mix"
        )
    assert final.choices[0].message.content == "Echo: tool sunny"
    sent = upstream.model_requests[-1].body["messages"]
    # The model sees its whole answer again, each call followed by its result.
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [tc["function"]["name"] for tc in sent[1]["tool_calls"]] == ["write", "get_weather"]
    assert [m["tool_call_id"] for m in sent[2:]] == [tc["id"] for tc in sent[1]["tool_calls"]]
    assert sent[2]["content"].startswith("Wrote 5 bytes") and sent[3]["content"] == "sunny"


def test_a_client_tool_named_like_a_server_tool_is_400(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream))
    clash = {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "x"}], tools=[clash]
        )
    assert info.value.body["param"] == "tools"  # type: ignore[index]
    assert "`read`" in info.value.body["message"]  # type: ignore[index]
    assert upstream.model_requests == []


def test_history_replays_tool_pairs_across_turns_of_a_user_session(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream))
    upstream.script(ToolCalls(calls=(call("write", path="a.txt", content="one"),), text="On it."))
    first = ask(gw, "save one", user="hist")
    assert first == "On it.\n\nEcho: tool Wrote 3 bytes to a.txt."
    # The client resends the conversation as it saw it: one reply, no tool rounds.
    with client(gw) as c:
        c.chat.completions.create(
            model="openclaw",
            user="hist",
            messages=[
                {"role": "user", "content": "save one"},
                {"role": "assistant", "content": first},
                {"role": "user", "content": "and now?"},
            ],
        )
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["content"] == "On it."
    assert sent[1]["tool_calls"][0]["function"]["name"] == "write"
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    assert sent[2]["content"] == "Wrote 3 bytes to a.txt."
    assert sent[3]["content"] == "Echo: tool Wrote 3 bytes to a.txt."
    # The transcript agreed with the client: no history reset was recorded.
    [records] = transcripts(gw.state_dir)
    assert not [r for r in records if (r.get("meta") or {}).get("type") == "history-reset"]


# --- policy -------------------------------------------------------------------------------------


def offered(upstream: FakeUpstream) -> set[str]:
    return {t["function"]["name"] for t in upstream.model_requests[-1].body.get("tools") or ()}


def test_policy_profile_allow_deny_and_per_agent(upstream: FakeUpstream, gateway_factory) -> None:
    cfg = tools_config(upstream, deny=["group:web"])
    cfg["agents"]["list"] = [
        {"id": "main", "default": True},
        {"id": "beta", "tools": {"allow": ["READ", "memory_*", "exec"], "deny": ["exec"]}},
        {"id": "quiet", "tools": {"profile": "minimal"}},
    ]
    gw = gateway_factory(cfg)
    ask(gw, "hi")
    assert offered(upstream) == CODING_TOOLS - {"web_fetch"}
    ask(gw, "hi", model="openclaw:beta")
    assert offered(upstream) == {"read", "memory_search", "memory_get"}
    ask(gw, "hi", model="openclaw:quiet")
    assert "tools" not in upstream.model_requests[-1].body
    # A tool the agent may not use, called anyway: an error result, and the run goes on.
    upstream.script(ToolCalls(calls=(call("exec", command="ls"),)))
    reply = ask(gw, "run ls", model="openclaw:beta")
    assert reply.startswith("Echo: tool Tool `exec` not found. Tools you can call: ")


def test_unknown_names_in_the_policy_are_a_startup_warning(
    upstream: FakeUpstream, gateway_factory, caplog: pytest.LogCaptureFixture
) -> None:
    # caplog's handler on the logger itself: once the CLI ran in this process, "openclaw" no
    # longer propagates to the root logger.
    logger = logging.getLogger("openclaw")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="openclaw"):
            gateway_factory(tools_config(upstream, deny=["exce", "apply_patch"]))
    finally:
        logger.removeHandler(caplog.handler)
    named = {tuple(r.names) for r in caplog.records if "unknown tools" in r.getMessage()}
    assert named == {("exce",)}


def test_models_without_tools_are_offered_none(upstream: FakeUpstream, gateway_factory) -> None:
    cfg = tools_config(upstream)
    cfg["models"]["providers"]["fake"]["models"][0]["tools"] = False
    gw = gateway_factory(cfg)
    assert ask(gw, "plain") == "Echo: plain"
    assert "tools" not in upstream.model_requests[-1].body


def test_bad_calls_become_error_results_the_model_can_recover_from(
    upstream: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(tools_config(upstream))
    (gw.state_dir / "outside.txt").write_text("not yours")
    (gw.state_dir / "workspace").mkdir(exist_ok=True)
    (gw.state_dir / "workspace" / "link").symlink_to(gw.state_dir / "outside.txt")
    upstream.script(
        ToolCalls(
            calls=(
                ("read", '{"path": 5}'),
                ("read", "not json"),
                call("read", path="../outside.txt"),
                call("read", path=str(gw.state_dir / "outside.txt")),
                call("read", path="link"),
                call("nope"),
                call("exec", command="cat a.txt | wc -l"),
            )
        )
    )
    assert ask(gw, "try things", user="bad").startswith("Echo: tool ")
    fed = tool_messages(upstream.model_requests[-1].body)
    assert len(fed) == 7
    [records] = transcripts(gw.state_dir)
    results = [r for r in records if r["role"] == "tool"]
    assert [r["meta"]["isError"] for r in results] == [True] * 7
    texts = [m["content"] for m in fed]
    assert texts[0] == "Invalid arguments for `read`: `path`: Input should be a valid string."
    assert texts[1] == "Arguments for `read` are not valid JSON."
    assert all("not yours" not in t for t in texts)
    assert sum("outside the agent's workspace" in t for t in texts[2:5]) == 3
    assert "not found" in texts[5]
    assert "Pipes, redirects and chaining" in texts[6]


def _three_rounds(i: int, text: bool) -> list[Any]:
    said = (lambda s: s) if text else (lambda s: None)
    return [
        ToolCalls(calls=(call("ls", path="."),), text=said(f"Step {i}a.")),
        ToolCalls(calls=(call("ls"),), text=said(f"Step {i}b.")),
        ToolCalls(calls=(call("exec", command="pwd"),), text=said(f"Step {i}c.")),
        Answer(),
    ]


@pytest.mark.parametrize("text", [True, False], ids=["rounds-with-text", "silent-rounds"])
def test_a_small_history_budget_reads_whole_turns(
    upstream: FakeUpstream, gateway_factory, text: bool
) -> None:
    """Regression: the transcript's last records began inside a turn, so the history seen as
    the client saw it did not match and was replaced (a reset), or a result went without its
    call."""
    cfg = tools_config(upstream)
    cfg["agents"]["defaults"]["maxHistoryMessages"] = 10
    gw = gateway_factory(cfg)
    messages: list[dict[str, Any]] = []
    with client(gw) as c:
        for i in (1, 2, 3, 4):
            upstream.script(*(_three_rounds(i, text) if i < 4 else [Answer()]))
            messages.append({"role": "user", "content": f"q{i}"})
            reply = c.chat.completions.create(model="openclaw", messages=messages, user="budget")
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    [records] = transcripts(gw.state_dir)
    assert not [r for r in records if (r.get("meta") or {}).get("type") == "history-reset"]
    sent = upstream.model_requests[-1].body["messages"]
    assert sent[0]["role"] == "user" and sent[-1] == {"role": "user", "content": "q4"}
    for i, m in enumerate(sent):
        if m["role"] == "tool":  # each result right after the call it answers
            assert m["tool_call_id"] in {tc["id"] for tc in sent[i - 1].get("tool_calls") or []} | {
                m2["tool_call_id"] for m2 in sent[:i] if m2["role"] == "tool"
            }


def test_a_client_result_after_many_rounds_keeps_its_call(
    upstream: FakeUpstream, gateway_factory
) -> None:
    cfg = tools_config(upstream)
    cfg["agents"]["defaults"]["maxHistoryMessages"] = 4
    gw = gateway_factory(cfg)
    upstream.script(
        *[
            ToolCalls(calls=(call("ls", path="."), call("exec", command=f"echo {i}")))
            for i in range(5)
        ],
        ToolCalls(calls=(call("get_weather", city="Oslo"),)),
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    with client(gw) as c:
        reply = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], user="many"
        )
        [mine] = reply.choices[0].message.tool_calls or []
        messages += [
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": mine.id, "content": "sunny"},
        ]
        final = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], user="many"
        )
    assert final.choices[0].message.content == "Echo: tool sunny"
    sent = upstream.model_requests[-1].body["messages"]
    assert sent[0]["role"] == "user"
    assert sent[-1] == {"role": "tool", "content": "sunny", "tool_call_id": mine.id}
    assert any(mine.id in [tc["id"] for tc in m.get("tool_calls") or []] for m in sent)
    # The transcript was read far enough back to agree with the client: no reset.
    [records] = transcripts(gw.state_dir)
    assert not [r for r in records if (r.get("meta") or {}).get("type") == "history-reset"]


def test_openclaw_agent_local_masks_the_generated_token(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Regression: --local built its runtime without the token the gateway generated into the
    state dir, so a tool could hand it to the model."""
    state = tmp_path / "state"
    (state / "credentials").mkdir(parents=True)
    token = "generated-token-0123456789abcdef"
    (state / "credentials" / "gateway-token").write_text(token + "\n")
    (state / "workspace").mkdir()
    (state / "workspace" / "notes.txt").write_text(f"the token is {token}")
    config = tmp_path / "cli.json"
    config.write_text(
        json.dumps({**tools_config(upstream), "gateway": {"auth": {"mode": "token"}}})
    )
    upstream.script(ToolCalls(calls=(call("read", path="notes.txt"),)))
    env = {"OPENCLAW_STATE_DIR": str(state), "OPENCLAW_CONFIG_PATH": str(config)}
    res = CliRunner().invoke(cli, ["agent", "--local", "-m", "read it"], env=env)
    assert res.exit_code == 0, res.output
    assert token not in res.stdout and "the token is [REDACTED]" in res.stdout
    assert token not in json.dumps(upstream.model_requests[-1].body)
