"""The control page's WebSocket methods against races: a delete while another worker runs the
session, a Stop landing while a finished turn is being committed (found in review)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from openclaw.agents.runner import RunParams, RunResult
from openclaw.gateway import ws_methods
from openclaw.gateway.app import create_app
from openclaw.gateway.ws import Connection
from openclaw.messages import ChatMessage
from tests.e2e.conftest import chat_config
from tests.harness import make_config
from tests.upstream import FakeUpstream, slow_stream


@contextlib.asynccontextmanager
async def _gateway(config: dict[str, Any], state: Path):
    app = create_app(make_config(config), state_dir=state, env={})
    async with app.router.lifespan_context(app):
        yield app.state.gateway


def _conn(gw: Any) -> Connection:
    conn = Connection(None, gw)  # type: ignore[arg-type]
    conn.identity = gw.auth.identity
    return conn


async def test_delete_while_another_worker_runs_the_session(tmp_path: Path) -> None:
    """Two gateways (two workers) on one state dir: worker B is running a turn on a session
    when worker A deletes it.  A answers deleted: true, then B's commit brings the session
    back (a fresh session id holding B's turn, whose model call saw the deleted history)."""
    state = tmp_path / "state"
    with FakeUpstream() as up:
        config = chat_config(up)
        async with _gateway(config, state) as a, _gateway(config, state) as b:
            key = "agent:main:shared"
            target = a.runtime.agents.target("main", session_key=key, default="main")
            first = await a.runtime.runner.run(
                RunParams(message=ChatMessage(role="user", content="one"), target=target)
            )
            assert isinstance(first, RunResult)
            before = await a.runtime.store.get(key)
            assert before is not None and before.turns == 1

            up.script(slow_stream(chunks=100, delay=0.03))

            async def consume() -> None:
                params = RunParams(message=ChatMessage(role="user", content="two"), target=target)
                async with contextlib.aclosing(b.runtime.runner.stream(params)) as events:
                    async for _ in events:
                        pass

            run = asyncio.create_task(consume())
            # B's call is at the model: it holds the session's lease until its 3 s stream ends.
            assert await asyncio.to_thread(up.wait_for_requests, 2, 30)
            assert not run.done()
            try:
                await ws_methods.sessions_delete(_conn(a), {"sessionKey": key})
                refused = None
            except Exception as exc:
                refused = getattr(exc, "code", None)
            await run
            after = await a.runtime.store.get(key)
            # Either refused (B holds the session's cross-process lease), or really gone; today
            # A answers deleted: true and B's commit re-creates the session right after.
            assert refused == "session_busy" or after is None, (refused, after)


class _Frames(Connection):
    """A connection whose frames are collected instead of sent."""

    def __init__(self, gw: Any) -> None:
        super().__init__(None, gw)  # type: ignore[arg-type]
        self.identity = gw.auth.identity
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


async def test_abort_during_the_commit_says_aborted_but_keeps_a_complete_turn(
    tmp_path: Path,
) -> None:
    """agent.abort landing after the model answered, while the turn is being committed: the
    runner keeps the turn as done (stopReason stop), but the agent method answers
    stopReason "aborted" and emits a lifecycle "aborted" event: the page and the transcript
    disagree."""
    with FakeUpstream() as up:
        async with _gateway(chat_config(up), tmp_path / "state") as gw:
            store = gw.runtime.store
            original = store.record_turn
            committing = asyncio.Event()
            pending: set[asyncio.Future[None]] = set()

            def slow_record_turn(turn: Any) -> asyncio.Future[None]:
                inner = original(turn)
                outer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                async def later() -> None:
                    committing.set()
                    await inner
                    await asyncio.sleep(0.3)
                    outer.set_result(None)

                pending.add(asyncio.ensure_future(later()))
                return outer

            store.record_turn = slow_record_turn  # type: ignore[method-assign]
            conn = _Frames(gw)
            task = asyncio.create_task(
                ws_methods.agent(conn, {"message": "hi", "sessionKey": "race"})
            )
            await asyncio.wait_for(committing.wait(), 5)
            (run_id,) = list(gw.ws_runs)
            answer = await ws_methods.agent_abort(_Frames(gw), {"runId": run_id})
            assert answer == {"runId": run_id, "aborted": True}
            result = await task
            store.record_turn = original  # type: ignore[method-assign]
            await gw.runtime.runner.settled("agent:main:race")
            entry = await store.get("agent:main:race")
            assert entry is not None
            last = (await store.read_history(entry, max_records=1))[-1]
            # The answer and the stored turn must agree.
            assert result.get("stopReason") == last.stop_reason, (result, last.stop_reason)
