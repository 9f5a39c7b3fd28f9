"""The shared agent run, with a scripted provider behind the Provider protocol."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import pytest

from openclaw.agents.events import ALL_RUNS, RunEnded, RunStarted
from openclaw.agents.runner import RunParams, RunResult
from openclaw.errors import GatewayBusyError, UnsupportedError, UpstreamUnavailableError
from openclaw.messages import ChatMessage, ImagePart, TextDelta, Usage
from openclaw.providers.base import Finished, ModelRequest, ProviderEvent
from openclaw.runtime import Runtime
from openclaw.sessions.keys import Target, resolve_target
from tests.harness import make_config


class ScriptedProvider:
    """Replies "reply to <last user text>" word by word, recording every request."""

    name = "scripted"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[ModelRequest] = []
        self.spans: list[tuple[str, float, float]] = []
        self.closed: list[float] = []
        self.fail_next: Exception | None = None

    def supports_images(self, model: str) -> bool:
        return False

    def supports_tools(self, model: str) -> bool:
        return False

    async def stream(
        self, request: ModelRequest, *, deltas: bool = True
    ) -> AsyncGenerator[ProviderEvent, None]:
        self.requests.append(request)
        started = time.monotonic()
        try:
            if self.fail_next is not None:
                raise self.fail_next
            words = f"reply to {request.messages[-1].text}".split(" ")
            for i, word in enumerate(words):
                await asyncio.sleep(self.delay)
                yield TextDelta(word if i == 0 else " " + word)
            yield Usage(10, len(words))
            yield Finished("stop")
        finally:
            self.closed.append(time.monotonic())
            self.spans.append((request.messages[-1].text, started, time.monotonic()))

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
        return Usage(1, 1, estimated=True)

    async def aclose(self) -> None:
        return None


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def stored(key: str) -> Target:
    return resolve_target("main", session_key=key, default="main")


def fresh() -> Target:
    return resolve_target("main", default="ephemeral")


@contextlib.asynccontextmanager
async def runtime(tmp_path: Path, provider: ScriptedProvider, **defaults):
    cfg = make_config({"agents": {"defaults": {"model": "scripted/m", **defaults}}})
    rt = Runtime(cfg, tmp_path, providers={"scripted": provider})
    await rt.start()
    try:
        yield rt
    finally:
        await rt.close()


async def test_history_carried_across_two_turns(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p) as rt:
        key = "agent:main:main"
        first = await rt.runner.run(RunParams(user("hello"), stored(key)))
        assert first.text == "reply to hello"
        assert first.usage.completion_tokens == 3
        await rt.runner.run(RunParams(user("again"), stored(key)))
    assert [m.text for m in p.requests[1].messages] == ["hello", "reply to hello", "again"]


async def test_history_budget_drops_oldest_turns(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p, maxHistoryMessages=4) as rt:
        for i in range(6):
            await rt.runner.run(RunParams(user(f"m{i}"), stored("agent:main:b")))
    sent = [m.text for m in p.requests[-1].messages]
    assert sent == ["m3", "reply to m3", "m4", "reply to m4", "m5"]


async def test_token_budget(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p, maxHistoryTokens=20) as rt:
        for i in range(5):
            await rt.runner.run(RunParams(user(f"message number {i}"), stored("agent:main:t")))
    history = p.requests[-1].messages[:-1]
    assert 0 < len(history) < 8
    assert history[0].role == "user"


async def test_runs_on_one_session_serialise_different_sessions_overlap(tmp_path: Path) -> None:
    p = ScriptedProvider(delay=0.05)
    async with runtime(tmp_path, p) as rt:
        await asyncio.gather(
            rt.runner.run(RunParams(user("a1"), stored("agent:main:a"))),
            rt.runner.run(RunParams(user("a2"), stored("agent:main:a"))),
            rt.runner.run(RunParams(user("b1"), stored("agent:main:b"))),
        )
    spans = {text: (start, end) for text, start, end in p.spans}
    assert spans["a2"][0] >= spans["a1"][1]  # second waited for the first, in order
    assert spans["b1"][0] < spans["a1"][1]  # another session ran alongside
    # The second turn saw the first's reply.
    a2 = next(r for r in p.requests if r.messages[-1].text == "a2")
    assert [m.text for m in a2.messages] == ["a1", "reply to a1", "a2"]


async def test_cancellation_closes_the_provider_and_stores_the_partial_reply(
    tmp_path: Path,
) -> None:
    p = ScriptedProvider(delay=0.2)
    async with runtime(tmp_path, p) as rt:
        params = RunParams(user("one two three four five six"), stored("agent:main:c"))

        streaming = asyncio.Event()

        async def consume() -> None:
            async for item in rt.runner.stream(params):
                if isinstance(item, TextDelta):
                    streaming.set()

        task = asyncio.create_task(consume())
        await streaming.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.closed  # the provider's call was closed as the run unwound
        await rt.runner.drain()
        entry = await rt.store.get("agent:main:c")
        assert entry is not None
        records = await rt.store.read_history(entry, max_records=None)
    assert [r.role for r in records] == ["user", "assistant"]
    assert records[-1].stop_reason == "aborted"
    assert records[-1].content and "six" not in records[-1].content


async def test_torn_transcript_line_is_skipped(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p) as rt:
        key = "agent:main:torn"
        await rt.runner.run(RunParams(user("before crash"), stored(key)))
        await rt.runner.drain()
        entry = await rt.store.get(key)
        assert entry is not None
        path = tmp_path / "agents" / "main" / "sessions" / f"{entry.session_id}.jsonl"
        with path.open("ab") as fh:
            fh.write(b'{"role": "user", "content": "half a li')
        await rt.runner.run(RunParams(user("after crash"), stored(key)))
    assert [m.text for m in p.requests[-1].messages] == [
        "before crash",
        "reply to before crash",
        "after crash",
    ]


async def test_events_on_the_bus(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p) as rt:
        with rt.bus.subscribe(ALL_RUNS) as sub:
            result = await rt.runner.run(RunParams(user("x"), fresh()))
            events = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
    assert {e.run_id for e in events} == {result.run_id}
    assert {e.session_key for e in events} == {result.session_key}
    kinds = [type(e.event) for e in events]
    assert kinds[0] is RunStarted
    assert kinds[-1] is RunEnded
    ended = events[-1].event
    assert isinstance(ended, RunEnded)
    assert (ended.phase, ended.usage) == ("end", result.usage)
    assert "".join(e.event.text for e in events if isinstance(e.event, TextDelta)) == "reply to x"
    assert sub.dropped == 0


async def test_errors_are_stored_and_raised(tmp_path: Path) -> None:
    p = ScriptedProvider()
    p.fail_next = UpstreamUnavailableError("down")
    async with runtime(tmp_path, p) as rt:
        with pytest.raises(UpstreamUnavailableError):
            await rt.runner.run(RunParams(user("x"), stored("agent:main:e")))
        await rt.runner.drain()
        entry = await rt.store.get("agent:main:e")
        assert entry is not None
        records = await rt.store.read_history(entry, max_records=None)
    assert records[-1].stop_reason == "error"
    assert records[-1].meta is not None and records[-1].meta["error"]["message"] == "down"
    assert len(p.requests) == 3  # retried twice (the default) before giving up


async def test_gateway_busy_beyond_the_queue(tmp_path: Path) -> None:
    p = ScriptedProvider(delay=0.1)
    async with runtime(tmp_path, p, maxConcurrent=1, maxQueued=1) as rt:
        results = await asyncio.gather(
            *(rt.runner.run(RunParams(user(f"q{i}"), fresh())) for i in range(3)),
            return_exceptions=True,
        )
    assert sum(isinstance(r, RunResult) for r in results) == 2
    assert sum(isinstance(r, GatewayBusyError) for r in results) == 1


async def test_workspace_bootstrap_files_in_fixed_order_and_capped(tmp_path: Path) -> None:
    p = ScriptedProvider()
    ws = tmp_path / "workspace"
    ws.mkdir()
    (ws / "USER.md").write_text("user file")
    (ws / "AGENTS.md").write_text("agents file " + "x" * 100)
    (ws / "SOUL.md").write_text("soul file")
    async with runtime(tmp_path, p, bootstrapMaxChars=50) as rt:
        await rt.runner.run(RunParams(user("x"), fresh(), extra_system_prompt="extra part"))
    system = p.requests[0].messages[0]
    assert system.role == "system"
    text = system.text
    assert (
        text.index("AGENTS.md")
        < text.index("SOUL.md")
        < text.index("USER.md")
        < text.index("extra part")
    )
    assert "x" * 60 not in text
    assert "truncated" in text


async def test_unknown_agent_names_the_known_ones(tmp_path: Path) -> None:
    p = ScriptedProvider()
    async with runtime(tmp_path, p) as rt:
        with pytest.raises(Exception) as info:
            await rt.runner.run(RunParams(user("x"), Target("ghost", "agent:ghost:openai:x", True)))
    assert "main" in str(info.value)


async def test_retention_prunes_old_ephemeral_sessions_only(tmp_path: Path) -> None:
    p = ScriptedProvider()
    cfg = make_config(
        {
            "agents": {"defaults": {"model": "scripted/m"}},
            "session": {"maintenance": {"ephemeralMaxCount": 2, "ephemeralMaxAgeMs": 3_600_000}},
        }
    )
    rt = Runtime(cfg, tmp_path, providers={"scripted": p})
    await rt.start()
    try:
        for i in range(5):
            await rt.runner.run(RunParams(user(f"e{i}"), fresh()))
        await rt.runner.run(RunParams(user("keep"), stored("agent:main:keep")))
        await rt.runner.drain()
        removed = await rt.prune()
        assert removed == 3
        sessions = await rt.store.list_sessions(include_ephemeral=True)
        assert sum(s.ephemeral for s in sessions) == 2
        assert any(s.key == "agent:main:keep" for s in sessions)
        # Per-request sessions keep their lines in the index, not a file each.
        files = list((tmp_path / "agents" / "main" / "sessions").glob("*.jsonl"))
        assert len(files) == 1
        for s in sessions:
            assert len(await rt.store.read_history(s, max_records=None)) == 2
    finally:
        await rt.close()
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.sqlite")) as db:
        (lines,) = db.execute("SELECT COUNT(*) FROM ephemeral_turns").fetchone()
    assert lines == 2  # a row per kept turn: the pruned sessions' rows went with them


async def test_a_deadline_whose_step_swallows_the_cancel_times_out_cleanly() -> None:
    """The deadline's cancel is taken back once whatever the step does with it, so the task
    is not left marked cancelling (later timeouts and reaps would misread it)."""
    from openclaw.agents.runner import _DeadlineGuard

    async def swallows() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 1
        return 0

    task = asyncio.current_task()
    assert task is not None
    guard = _DeadlineGuard(asyncio.get_running_loop().time() + 0.01)
    with pytest.raises(TimeoutError):
        await guard.wait(swallows())
    assert task.cancelling() == 0
    with pytest.raises(TimeoutError):  # past the deadline: at once
        await guard.wait(asyncio.sleep(0))
    guard.close()


async def test_execute_awaits_every_event_in_order_then_the_result(tmp_path: Path) -> None:
    """The door's ``emit`` sees the start, every delta, the end and the result, in that order,
    and the result it is given is the one returned; the bus sees the same events (not the
    result)."""
    p = ScriptedProvider()
    seen: list[object] = []

    async def emit(item: object) -> None:
        await asyncio.sleep(0)  # a door that takes its time (a socket)
        seen.append(item)

    async with runtime(tmp_path, p) as rt:
        with rt.bus.subscribe(ALL_RUNS) as sub:
            result = await rt.runner.execute(RunParams(user("a b"), fresh()), emit)
            published = []
            while not sub.queue.empty():
                published.append(sub.queue.get_nowait().event)
    assert isinstance(seen[0], RunStarted)
    assert [type(x) for x in seen[1:-2]] == [TextDelta] * 4
    assert "".join(x.text for x in seen[1:-2]) == "reply to a b"  # type: ignore[attr-defined]
    assert isinstance(seen[-2], RunEnded) and seen[-2].phase == "end"
    assert seen[-1] is result
    assert published == seen[:-1]


async def test_a_run_refused_before_the_model_ends_with_an_event_to_the_door(
    tmp_path: Path,
) -> None:
    p = ScriptedProvider()
    seen: list[object] = []

    async def emit(item: object) -> None:
        seen.append(item)

    async with runtime(tmp_path, p) as rt:
        bad = RunParams(user("x"), resolve_target("ghost", default="ephemeral"))
        with pytest.raises(Exception, match="ghost"):
            await rt.runner.execute(bad, emit)
        assert seen == []  # an unknown agent is refused before the run starts
        params = RunParams(
            ChatMessage(role="user", content=(ImagePart("image/png", b"\x89PNG"),)), fresh()
        )
        with pytest.raises(UnsupportedError):
            await rt.runner.execute(params, emit)
    assert [type(x) for x in seen] == [RunStarted, RunEnded]
    ended = seen[-1]
    assert isinstance(ended, RunEnded) and ended.phase == "error"
    assert p.requests == []


async def test_stream_relays_a_failure_after_what_came_before(tmp_path: Path) -> None:
    p = ScriptedProvider()
    p.fail_next = UpstreamUnavailableError("down")
    kinds: list[type] = []
    async with runtime(tmp_path, p) as rt:
        with pytest.raises(UpstreamUnavailableError):
            async with contextlib.aclosing(
                rt.runner.stream(RunParams(user("x"), fresh()))
            ) as items:
                async for item in items:
                    kinds.append(type(item))
    assert kinds == [RunStarted, RunEnded]


async def test_closing_the_stream_early_aborts_the_run_and_keeps_its_turn(
    tmp_path: Path,
) -> None:
    """A consumer that stops reading (``aclose``) ends the run as a client leaving does: the
    provider's call is closed and the partial turn stored as aborted."""
    p = ScriptedProvider(delay=0.05)
    async with runtime(tmp_path, p) as rt:
        params = RunParams(user("one two three four five six"), stored("agent:main:early"))
        async with contextlib.aclosing(rt.runner.stream(params)) as items:
            async for item in items:
                if isinstance(item, TextDelta):
                    break
        assert p.closed
        await rt.runner.drain()
        entry = await rt.store.get("agent:main:early")
        assert entry is not None
        records = await rt.store.read_history(entry, max_records=None)
        assert rt.runner.active_runs() == []
    assert records[-1].stop_reason == "aborted"


async def test_a_door_that_fails_mid_run_aborts_it_like_a_client_leaving(
    tmp_path: Path,
) -> None:
    """The door's ``emit`` raising (its socket closed under it) is not the run's failure: the
    run ends aborted with its partial turn kept and the upstream call closed, observers see it
    end aborted, and the door's own error comes out of ``execute``."""

    class SocketClosed(Exception):
        pass

    p = ScriptedProvider(delay=0.01)

    async def emit(item: object) -> None:
        if isinstance(item, TextDelta):
            raise SocketClosed()

    async with runtime(tmp_path, p) as rt:
        with rt.bus.subscribe(ALL_RUNS) as sub:
            with pytest.raises(SocketClosed):
                await rt.runner.execute(RunParams(user("a b c d"), stored("agent:main:d")), emit)
            await rt.runner.drain()
            ends = []
            while not sub.queue.empty():
                event = sub.queue.get_nowait().event
                if isinstance(event, RunEnded):
                    ends.append(event.phase)
        assert p.closed
        entry = await rt.store.get("agent:main:d")
        assert entry is not None
        records = await rt.store.read_history(entry, max_records=None)
    assert ends == ["aborted"]
    assert records[-1].stop_reason == "aborted"
