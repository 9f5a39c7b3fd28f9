"""The built-in tools on their own: arguments checked, results and errors, the workspace's
walls, exec's allowlist and limits, secrets kept out, memory search, web_fetch's guard."""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from aiohttp import web

from openclaw.config.loader import validate
from openclaw.config.schema import ToolsConfig
from openclaw.errors import UpstreamUnavailableError
from openclaw.runtime import provider_secrets
from openclaw.sessions.store import SqliteSessionStore
from openclaw.tools import memory_index
from openclaw.tools.base import ToolContext, ToolError
from openclaw.tools.memory_index import MemoryIndexes
from openclaw.tools.redact import MASK, Redactor
from openclaw.tools.registry import BUILTIN, run_tool
from openclaw.tools.shell import allowlisted_argv
from openclaw.tools.web import WebFetcher
from tests.harness import process_group_alive

SECRET = "gateway-secret-0123456789"
TOOLS = {t.name: t for t in BUILTIN}


class Harness:
    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.workspace = ctx.workspace

    async def call(self, name: str, **args: Any) -> tuple[str, bool]:
        done = await run_tool(TOOLS[name], orjson.dumps(args).decode(), self.ctx)
        return done.result.text, done.result.is_error


@pytest.fixture
async def tools(tmp_path: Path) -> AsyncIterator[Harness]:
    async def make(**cfg: Any) -> Harness:
        ws = tmp_path / "workspace"
        ws.mkdir(exist_ok=True)
        config = ToolsConfig.model_validate(cfg)
        ctx = ToolContext(
            agent_id="main",
            workspace=ws,
            session_key="agent:main:main",
            config=config,
            store=store,
            redactor=Redactor([SECRET]),
            memory=MemoryIndexes(tmp_path / "state"),
            web=WebFetcher(config.web_fetch),
        )
        return Harness(ctx)

    async with SqliteSessionStore(tmp_path / "state") as store:
        harness = await make()
        harness.make = make  # type: ignore[attr-defined]
        yield harness


# --- files ------------------------------------------------------------------------------------


async def test_write_read_edit_ls(tools: Harness) -> None:
    text, err = await tools.call("write", path="notes/todo.md", content="one\ntwo\nthree\n")
    assert not err and "Wrote 14 bytes to notes/todo.md" in text
    assert (tools.workspace / "notes" / "todo.md").read_text() == "one\ntwo\nthree\n"
    assert (await tools.call("read", path="notes/todo.md")) == ("one\ntwo\nthree\n", False)
    text, _ = await tools.call("read", file_path="notes/todo.md", offset=2, limit=1)
    assert text == "two\n\n[Showing lines 2-2 of 3. Use offset=3 to continue.]"
    assert (await tools.call("edit", path="notes/todo.md", oldText="two", newText="2"))[1] is False
    assert (tools.workspace / "notes" / "todo.md").read_text() == "one\n2\nthree\n"
    assert (await tools.call("ls"))[0] == "notes/"
    assert (await tools.call("ls", path="notes"))[0] == "todo.md"


async def test_edit_needs_exactly_one_match(tools: Harness) -> None:
    await tools.call("write", path="f.txt", content="a a b")
    assert await tools.call("edit", path="f.txt", oldText="zzz", newText="y") == (
        "`oldText` was not found in the file.",
        True,
    )
    text, err = await tools.call("edit", path="f.txt", old_string="a", new_string="c")
    assert err and "occurs 2 times" in text
    text, err = await tools.call("edit", path="f.txt", oldText="b", newText="b")
    assert err and "nothing would change" in text


async def test_read_caps_what_it_shows(tools: Harness) -> None:
    await tools.call("write", path="big.txt", content="".join(f"line {i}\n" for i in range(5000)))
    text, _ = await tools.call("read", path="big.txt")
    assert text.endswith("[Showing lines 1-2000 of 5000. Use offset=2001 to continue.]")
    await tools.call("write", path="wide.txt", content=("x" * 1000 + "\n") * 100)
    text, _ = await tools.call("read", path="wide.txt")
    assert "[Showing lines 1-51 of 100. Use offset=52 to continue.]" in text
    (tools.workspace / "bin.dat").write_bytes(b"\x00\x01\x02")
    text, err = await tools.call("read", path="bin.dat")
    assert err and "binary" in text
    # One line longer than the cap on its own: its start, and said so.
    (tools.workspace / "one-line.txt").write_text("é" * 100_000 + "\nsecond\n")
    text, _ = await tools.call("read", path="one-line.txt")
    assert len(text.encode()) < 52 * 1024
    assert "[Line 1 is cut at 50 KB.]" in text
    assert text.endswith("[Showing lines 1-1 of 2. Use offset=2 to continue.]")


async def test_memory_get_caps_what_it_shows(tools: Harness) -> None:
    await tools.call("write", path="memory/big.md", content=("y" * 999 + "\n") * 200)
    text, _ = await tools.call("memory_get", path="memory/big.md", **{"from": 3})
    body = orjson.loads(text)
    assert body["truncated"] is True and body["nextFrom"] == 3 + 51
    assert body["text"].count("\n") == 50


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/hostname", "sub/../../x", "link/secret"])
async def test_paths_that_leave_the_workspace_are_refused(tools: Harness, path: str) -> None:
    outside = tools.workspace.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("s")
    link = tools.workspace / "link"
    if not link.exists():
        link.symlink_to(outside)
    for name, args in (("read", {}), ("write", {"content": "x"}), ("ls", {})):
        text, err = await tools.call(name, path=path, **args)
        assert err and "outside the agent's workspace" in text, (name, text)


async def test_the_walls_can_be_lowered(tools: Harness) -> None:
    open_tools = await tools.make(fs={"workspaceOnly": False})  # type: ignore[attr-defined]
    (tools.workspace.parent / "next-door.txt").write_text("hello")
    assert await open_tools.call("read", path="../next-door.txt") == ("hello", False)


async def test_bad_arguments_are_an_error_result(tools: Harness) -> None:
    text, err = await tools.call("read", path="x", bogus=1)
    assert err and "Invalid arguments for `read`" in text and "bogus" in text
    text, err = await tools.call("write", path="x")
    assert err and "content" in text


# --- exec --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("ls | wc -l", "Pipes, redirects and chaining"),
        ("echo hi > out.txt", "Pipes, redirects and chaining"),
        ("ls && pwd", "Pipes, redirects and chaining"),
        ("ls; pwd", "Pipes, redirects and chaining"),
        ("echo $(id)", "substitution"),
        ("echo `id`", "substitution"),
        ("rm -rf x", "is not an allowed program"),
        ("/bin/cat x", "is not an allowed program"),
        ("cat /proc/self/environ", "outside the agent's workspace"),
        ("cat ../../etc/passwd", "outside the agent's workspace"),
        ("grep -r --file=/etc/passwd x", "outside the agent's workspace"),
        # File names after `--` may start with a dash; values glued to short options.
        ("cat -- -x/../../outside.txt", "outside the agent's workspace"),
        ("grep -o . -- -x/../../credentials/gateway-token", "outside the agent's workspace"),
        ("date -f/etc/passwd", "outside the agent's workspace"),
        ("date -f../outside.txt", "outside the agent's workspace"),
        ("date -r/etc/passwd", "outside the agent's workspace"),
        ("grep -rf../x y", "outside the agent's workspace"),
        ("wc --files0-from=/etc/passwd", "`wc --files0-from` is not allowed"),
        ("wc --files0-from=list", "`wc --files0-from` is not allowed"),
        ("ls -RL .", "`ls -L` is not allowed"),
        ("ls -lL .", "`ls -L` is not allowed"),
        ("ls --dereference .", "`ls --dereference` is not allowed"),
        # Options that change the host or follow every symlink of a tree.
        ("date -s 2001-01-01", "`date -s` is not allowed"),
        ("date -us 2001-01-01", "`date -s` is not allowed"),
        ("date --set=2001-01-01", "`date --set` is not allowed"),
        ("date --se=2001-01-01", "`date --se` is not allowed"),
        ("grep -Rn x .", "`grep -R` is not allowed"),
        ("grep --dereference-recursive x .", "is not allowed"),
    ],
)
async def test_the_allowlist_refuses(tools: Harness, command: str, why: str) -> None:
    text, err = await tools.call("exec", command=command)
    assert err and why in text


@pytest.mark.parametrize(
    "command", ["date 010100002030", "date -u 0101", "date -- 0101", "date 2030-01-01"]
)
def test_date_may_not_set_the_clock(tmp_path: Path, command: str) -> None:
    # Checked without running: on a machine where tests run as root a miss would set the clock.
    with pytest.raises(ToolError, match="only `date"):
        allowlisted_argv(command, ["date"], tmp_path, tmp_path, workspace_only=True)


@pytest.mark.parametrize("command", ["date", "date +%Y-%m-%d", "date -u -d tomorrow +%A"])
def test_date_may_show_the_time(tmp_path: Path, command: str) -> None:
    assert allowlisted_argv(command, ["date"], tmp_path, tmp_path, workspace_only=True)


async def test_allowed_commands_run_in_the_workspace(tools: Harness) -> None:
    await tools.call("write", path="a.txt", content="x\ny\n")
    text, err = await tools.call("exec", command="wc -l a.txt")
    assert not err and text.startswith("2 a.txt") and "[exit code 0," in text
    text, err = await tools.call("exec", command="cat missing.txt")
    assert err and "[exit code 1," in text
    text, err = await tools.call("exec", command="pwd")
    assert text.startswith(str(tools.workspace.resolve()))
    # No shell: `~` is a plain character, not the home folder.
    text, err = await tools.call("exec", command="cat ~/.openclaw/openclaw.json")
    assert err and "No such file" in text
    text, err = await tools.call("exec", command="head -n1 -- a.txt")
    assert not err and text.startswith("x\n")


async def test_full_mode_runs_a_shell_and_scrubs_secrets(
    tools: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", SECRET)
    monkeypatch.setenv("SOME_API_KEY", "prefix-" + SECRET)
    monkeypatch.setenv("HARMLESS", "visible")
    full = await tools.make(exec={"security": "full"})  # type: ignore[attr-defined]
    text, err = await full.call("exec", command="echo a b | wc -w && env")
    assert not err and text.startswith("2\n")
    assert "HARMLESS=visible" in text
    assert SECRET not in text and "OPENCLAW_GATEWAY_TOKEN" not in text
    assert "SOME_API_KEY" not in text
    # Output naming the secret anyway (a file holding it) is masked.
    (full.workspace / "leak.txt").write_text(f"token={SECRET}")
    text, _ = await full.call("exec", command="cat leak.txt")
    assert SECRET not in text and f"token={MASK}" in text


async def test_a_secret_cut_by_the_output_cap_is_still_masked(tools: Harness) -> None:
    full = await tools.make(exec={"security": "full", "maxOutputChars": 1000})  # type: ignore[attr-defined]
    (full.workspace / "s.txt").write_text("x" * 990 + SECRET)
    text, _ = await full.call("exec", command="cat s.txt")
    assert SECRET[:8] not in text


def test_secrets_are_masked_in_json_too() -> None:
    secret = 'Tr0ub4dor"&3\\x'
    redact = Redactor([], gateway=[secret])
    assert redact(orjson.dumps({"text": f"pw {secret}"}).decode()) == f'{{"text":"pw {MASK}"}}'


def test_only_credential_headers_of_providers_are_secrets() -> None:
    config = validate(
        {
            "models": {
                "providers": {
                    "router": {
                        "api": "openai-completions",
                        "baseUrl": "https://openrouter.example/v1",
                        "apiKey": "sk-or-0123456789",
                        "headers": {
                            "HTTP-Referer": "https://example.org",
                            "X-Title": "Notebook",
                            "X-Api-Key": "header-key-0123456789",
                            "Authorization": "Bearer bearer-token-0123456789",
                        },
                        "models": [{"id": "m"}],
                    }
                }
            }
        },
        env={},
    )
    assert set(provider_secrets(config)) == {
        "sk-or-0123456789",
        "header-key-0123456789",
        "Bearer bearer-token-0123456789",
        "bearer-token-0123456789",
    }


def test_the_gateway_secret_is_masked_however_short() -> None:
    redact = Redactor(["none", "sk-provider-key-123"], gateway=["hunter2"])
    assert redact("pw hunter2, key sk-provider-key-123, none") == f"pw {MASK}, key {MASK}, none"
    env = redact.environment({"GW": "hunter2", "HOME": "/root", "KEY": "none"})
    assert env == {"HOME": "/root", "KEY": "none"}


async def test_output_is_capped(tools: Harness) -> None:
    full = await tools.make(exec={"security": "full", "maxOutputChars": 1000})  # type: ignore[attr-defined]
    text, _ = await full.call("exec", command="yes | head -c 100000")
    assert "[output cut at 1000 characters]" in text
    assert len(text) < 1200


async def test_a_timeout_kills_the_whole_process_group(tools: Harness) -> None:
    full = await tools.make(exec={"security": "full", "timeoutSeconds": 30})  # type: ignore[attr-defined]
    text, err = await full.call("exec", command="echo $$ > pgid; sleep 60 & sleep 60", timeout=0.5)
    assert err and "killed after the timeout of 0.5 s" in text
    pgid = int((full.workspace / "pgid").read_text())
    await _group_gone(pgid)


async def _group_gone(pgid: int) -> None:
    """Until no process of group ``pgid`` is left (the test's own timeout bounds the wait)."""
    while process_group_alive(pgid):  # noqa: ASYNC110 - nothing to wait on: /proc is polled
        await asyncio.sleep(0.01)


async def test_the_command_ends_with_its_own_process(tools: Harness) -> None:
    # A child left in the background holds the output pipe open; the call still ends when the
    # shell does (not at the timeout), and the child goes with the group.
    full = await tools.make(exec={"security": "full", "timeoutSeconds": 60})  # type: ignore[attr-defined]
    text, err = await full.call("exec", command="echo $$ > pgid; sleep 60 & echo started")
    assert not err and "started" in text and "[exit code 0," in text, text
    await _group_gone(int((full.workspace / "pgid").read_text()))


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process as the reaper of orphaned descendants, as a gateway running as PID 1 in a
    container is."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    try:
        yield
    finally:
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


async def test_killed_background_children_are_reaped_not_left_as_zombies(
    tools: Harness, subreaper: None
) -> None:
    full = await tools.make(exec={"security": "full"})  # type: ignore[attr-defined]
    text, err = await full.call("exec", command="sleep 60 & echo $! > bg; echo started")
    assert not err and "started" in text
    bg = int((full.workspace / "bg").read_text())
    # Handed to this process when the shell ended, killed with the group, and collected.
    assert not os.path.exists(f"/proc/{bg}")  # noqa: ASYNC240 - a test, on its own loop


async def test_exec_can_be_turned_off(tools: Harness) -> None:
    off = await tools.make(exec={"security": "deny"})  # type: ignore[attr-defined]
    text, err = await off.call("exec", command="ls")
    assert err and "turned off" in text


# --- memory ------------------------------------------------------------------------------------


async def test_memory_search_finds_what_was_written_and_follows_changes(tools: Harness) -> None:
    await tools.call("write", path="MEMORY.md", content="# Notes\nThe blue key opens the shed.\n")
    await tools.call("write", path="memory/2026/trip.md", content="Flight to Oslo on Monday.\n")
    await tools.call("write", path="other.md", content="The blue key is not here.\n")
    text, err = await tools.call("memory_search", query="blue key")
    hits = orjson.loads(text)["results"]
    assert not err and [h["path"] for h in hits] == ["MEMORY.md"]
    assert hits[0]["startLine"] == 1 and "blue key" in hits[0]["snippet"]
    assert hits[0]["score"] == 1.0  # every word, the best BM25
    await tools.call("write", path="MEMORY.md", content="Nothing about keys now.\n")
    assert orjson.loads((await tools.call("memory_search", query="shed"))[0])["results"] == []
    hits = orjson.loads((await tools.call("memory_search", query="oslo"))[0])["results"]
    assert hits[0]["path"] == "memory/2026/trip.md"
    assert orjson.loads((await tools.call("memory_search", query="?!"))[0])["results"] == []


class ConceptEmbedder:
    """A stand-in embedding model that knows a few synonyms: words map to concept axes, a text
    to the normalised sum of its words' axes.  Counts what it is asked to embed."""

    CONCEPTS: ClassVar[dict[str, int]] = {
        "cat": 0,
        "feline": 0,
        "kitten": 0,
        "revenue": 1,
        "sales": 1,
        "rug": 2,
    }

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            v = [0.0, 0.0, 0.0, 0.01]
            for word in re.findall(r"\w+", text.lower()):
                if word in self.CONCEPTS:
                    v[self.CONCEPTS[word]] += 1.0
            norm = math.sqrt(sum(x * x for x in v))
            out.append([x / norm for x in v])
        return out


async def test_hybrid_memory_search_finds_other_words_and_embeds_each_chunk_once(
    tools: Harness,
) -> None:
    embedder = ConceptEmbedder()
    hybrid = replace(tools.ctx, embedding_model="fake/concepts", embed=embedder)
    harness = Harness(hybrid)
    await harness.call("write", path="memory/a.md", content="The feline rested all day.\n")
    await harness.call("write", path="memory/b.md", content="Quarterly sales went up.\n")
    text, err = await harness.call("memory_search", query="cat")
    body = orjson.loads(text)
    assert not err and body["provider"] == "hybrid" and body["model"] == "fake/concepts"
    # No keyword in common, found by meaning.
    assert body["results"][0]["path"] == "memory/a.md"
    assert sorted(embedder.calls[0][1:]) == [
        "Quarterly sales went up.",
        "The feline rested all day.",
    ]
    text, _ = await harness.call("memory_search", query="revenue")
    assert orjson.loads(text)["results"][0]["path"] == "memory/b.md"
    assert embedder.calls[1] == ["revenue"]  # the chunks' vectors were kept
    await harness.call("write", path="memory/b.md", content="Sales fell; the kitten slept.\n")
    await harness.call("memory_search", query="rug")
    assert embedder.calls[2] == ["rug", "Sales fell; the kitten slept."]  # only what changed


async def test_hybrid_search_batches_and_falls_back_to_keywords(
    tools: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = ConceptEmbedder()
    harness = Harness(replace(tools.ctx, embedding_model="fake/concepts", embed=embedder))
    for i in range(5):
        await harness.call("write", path=f"memory/{i}.md", content=f"note {i} about the cat\n")
    monkeypatch.setattr(memory_index, "EMBED_BATCH", 2)
    await harness.call("memory_search", query="cat")
    assert [len(call) for call in embedder.calls] == [2, 2, 2]  # query + 5 chunks, by twos

    async def broken(texts: list[str]) -> list[list[float]]:
        raise UpstreamUnavailableError("fake/concepts: connection refused")

    failing = Harness(replace(tools.ctx, embedding_model="fake/concepts", embed=broken))
    text, err = await failing.call("memory_search", query="cat")
    body = orjson.loads(text)
    assert not err and body["provider"] == "fts5" and "connection refused" in body["fallback"]
    assert len(body["results"]) == 5


async def test_memory_search_does_not_follow_links_out_of_the_workspace(
    tools: Harness, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keys.md").write_text("aws key AKIAOUTSIDE zebra42\n")
    (tools.workspace / "memory").mkdir()
    (tools.workspace / "memory" / "linked").symlink_to(outside)
    (tools.workspace / "memory" / "file.md").symlink_to(outside / "keys.md")
    (tools.workspace / "MEMORY.md").write_text("inside zebra42 note\n")
    text, _ = await tools.call("memory_search", query="zebra42")
    assert "AKIAOUTSIDE" not in text
    assert [r["path"] for r in orjson.loads(text)["results"]] == ["MEMORY.md"]


async def test_memory_get_reads_only_memory_files(tools: Harness) -> None:
    await tools.call("write", path="memory/a.md", content="1\n2\n3\n")
    text, _ = await tools.call("memory_get", path="memory/a.md", **{"from": 2}, lines=1)
    assert orjson.loads(text) == {"path": "memory/a.md", "text": "2"}
    text, err = await tools.call("memory_get", path="notes.md")
    assert err and "Only MEMORY.md" in text


# --- web_fetch ---------------------------------------------------------------------------------


@pytest.fixture
async def page() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        body = (
            "<html><head><title>T</title></head><body><nav>menu</nav><article>"
            "<h1>Local page</h1><p>The readable text of a page served on localhost for the "
            "test, long enough to be kept as the main content.</p></article></body></html>"
        )
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/page"
    finally:
        await runner.cleanup()


async def test_web_fetch_refuses_private_addresses_unless_allowed(
    tools: Harness, page: str
) -> None:
    text, err = await tools.call("web_fetch", url=page)
    assert err and "private, loopback or link-local" in text
    text, err = await tools.call("web_fetch", url="file:///etc/passwd")
    assert err and "Only http and https" in text
    lan = await tools.make(webFetch={"allowPrivateNetwork": True})  # type: ignore[attr-defined]
    text, err = await lan.call("web_fetch", url=page)
    assert not err and text.startswith("# Local page") and "menu" not in text
    text, _ = await lan.call("web_fetch", url=page, extractMode="text", maxChars=100)
    assert text.startswith("Local page") and text.endswith("[cut at 100 characters]")


# --- sessions ------------------------------------------------------------------------------------


async def test_sessions_tools_see_only_the_agents_own_sessions(tools: Harness) -> None:
    from openclaw.sessions.base import Turn
    from openclaw.sessions.models import TranscriptRecord

    store = tools.ctx.store
    for key in ("agent:main:a", "agent:beta:b"):
        records = (
            TranscriptRecord(role="user", content=f"hi {key}", timestamp=1.0),
            TranscriptRecord(role="assistant", content="x" * 3000, timestamp=2.0),
        )
        await store.record_turn(Turn(key, key.split(":")[1], False, records, None, None))
    listed = orjson.loads((await tools.call("sessions_list"))[0])["sessions"]
    assert [s["sessionKey"] for s in listed] == ["agent:main:a"]
    text, _ = await tools.call("sessions_history", sessionKey="a")
    messages = orjson.loads(text)["messages"]
    assert messages[0] == {"role": "user", "content": "hi agent:main:a"}
    assert messages[1]["truncated"] is True and len(messages[1]["content"]) == 2000
    text, err = await tools.call("sessions_history", sessionKey="agent:beta:b")
    assert err and "own sessions" in text
