"""``gateway run --workers N``: N processes on one port and one state dir. Runs on one session
never overlap across processes, the failed-auth limit counts every worker's failures, a killed
worker is started again while the others serve, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import Ws, chat_config, transcripts, wait_for
from tests.e2e.processes import TOKEN, GatewayProcess
from tests.upstream import Answer, FakeUpstream, slow_stream

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def workers_of(gw: GatewayProcess) -> list[int]:
    path = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children")
    return [int(p) for p in path.read_text().split()]


def served_by(gw: GatewayProcess) -> set[str]:
    """The workers that wrote a request line."""
    return set(re.findall(r"INFO request .*worker=(\d+)", gw.log))


@pytest.fixture
def upstream() -> Any:
    with FakeUpstream() as up:
        yield up


def two_workers(up: FakeUpstream, **extra: Any) -> dict[str, Any]:
    config = chat_config(up)
    config["gateway"]["workers"] = 2
    for key, value in extra.items():
        config["gateway"][key] = value
    return config


async def _chat(http: aiohttp.ClientSession, port: int, text: str, **body: Any) -> dict[str, Any]:
    payload = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **body}
    # A connection of its own per request, so that requests spread over the workers.
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json=payload,
        headers={**AUTH, "Connection": "close"},
    ) as reply:
        assert reply.status == 200, await reply.text()
        data: dict[str, Any] = await reply.json()
        return data


def test_runs_on_one_session_never_overlap_across_workers(upstream: FakeUpstream, spawn) -> None:
    # Each answer takes a while, so overlapping runs would both be in flight at the upstream.
    upstream.default = Answer(first_token_delay=0.02)
    gw = spawn(two_workers(upstream))
    assert len(workers_of(gw)) == 2

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(
                *(_chat(http, gw.port, f"turn {i}", user="shared") for i in range(16))
            )
            # Other sessions meanwhile run side by side.
            await asyncio.gather(
                *(_chat(http, gw.port, f"other {i}", user=f"u{i}") for i in range(8))
            )

    asyncio.run(main())
    assert served_by(gw) == {"0", "1"}
    # Each model call on the shared session saw every turn answered before it: the history
    # grows by one whole turn per call, never two calls with the same history.
    shared = [
        r.body["messages"]
        for r in upstream.model_requests
        if r.body["messages"][-1]["content"].startswith("turn ")
    ]
    assert sorted(len(m) for m in shared) == [1 + 2 * i for i in range(16)]
    [records] = [t for t in transcripts(gw.state_dir) if t[0]["content"].startswith("turn ")]
    roles = [r["role"] for r in records]
    assert roles == ["user", "assistant"] * 16


def test_failed_auth_attempts_count_over_all_workers(upstream: FakeUpstream, spawn) -> None:
    limit = {"maxAttempts": 6, "windowMs": 60_000, "lockoutMs": 60_000, "exemptLoopback": False}
    gw = spawn(two_workers(upstream, auth={"mode": "token", "rateLimit": limit}))

    async def main() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for _ in range(30):
                async with http.get(
                    f"http://127.0.0.1:{gw.port}/v1/models",
                    headers={"Authorization": "Bearer wrong", "Connection": "close"},
                ) as reply:
                    statuses.append(reply.status)
        return statuses

    statuses = asyncio.run(main())
    assert served_by(gw) == {"0", "1"}
    # Two limiters of their own would allow 12 failures; counted together (and each failure
    # counted before it is answered), exactly the limit, then only lockouts.
    assert statuses == [401] * 6 + [429] * 24, statuses


def test_a_killed_worker_is_started_again_while_the_other_serves(
    upstream: FakeUpstream, spawn
) -> None:
    gw = spawn(two_workers(upstream))
    first, second = workers_of(gw)
    os.kill(first, signal.SIGKILL)

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(10):
                # A connection that reached the dead worker's queue is reset; clients retry
                # those (the openai SDK does, twice by default).
                for attempt in range(3):
                    try:
                        reply = await _chat(http, gw.port, f"during {i}", user="during")
                        break
                    except aiohttp.ClientOSError:
                        if attempt == 2:
                            raise
                assert reply["choices"][0]["message"]["content"] == f"Echo: during {i}"

    asyncio.run(main())
    assert wait_for(lambda: "starting it again" in gw.log)
    assert wait_for(lambda: len(workers_of(gw)) == 2 and first not in workers_of(gw), 60)
    assert second in workers_of(gw)
    assert gw.stop() == 0
    assert "gateway stopped" in gw.log


def test_sigterm_stops_every_worker_and_a_killed_supervisor_takes_them_along(
    upstream: FakeUpstream, spawn
) -> None:
    gw = spawn(two_workers(upstream))
    pids = workers_of(gw)
    assert gw.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)

    gw = spawn(two_workers(upstream))
    pids = workers_of(gw)
    gw.proc.kill()
    gw.proc.wait()
    # Their stdin closes with the supervisor: they stop by themselves.
    assert wait_for(lambda: all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in pids), 30)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def test_sigterm_to_every_process_as_systemd_sends_it_still_drains(
    upstream: FakeUpstream, spawn
) -> None:
    """systemd signals every process of the unit: workers leave signals to the supervisor, so
    the second SIGTERM a worker would otherwise get does not force it out."""
    gw = spawn(two_workers(upstream))
    workers = workers_of(gw)
    gw.proc.send_signal(signal.SIGTERM)
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    assert gw.wait() == 0
    assert "forcing exit" not in gw.log and "killing the workers" not in gw.log
    assert gw.log.count("stopping (stdin closed") == 2
    assert "gateway stopped" in gw.log


def test_the_page_status_and_stop_reach_the_worker_serving_the_socket(
    upstream: FakeUpstream, spawn
) -> None:
    """The control page's WebSocket lands on one worker: `status` answers for that worker (its
    pid, with `workers: 2`), and `agent.abort` stops the run it started there."""
    gw = spawn(two_workers(upstream))
    wait_for(lambda: len(workers_of(gw)) == 2)
    with connect(f"ws://127.0.0.1:{gw.port}/") as conn:
        ws = Ws(conn)
        _, hello = ws.call("connect", {"auth": {"token": TOKEN}})
        assert hello["ok"] is True
        _, status = ws.call("status")
        assert status["payload"]["workers"] == 2
        assert status["payload"]["pid"] in workers_of(gw)
        upstream.script(slow_stream(chunks=400, delay=0.05))
        conn.send(
            orjson.dumps(
                {"type": "req", "id": "run", "method": "agent", "params": {"message": "long"}}
            ).decode()
        )
        while True:
            msg = orjson.loads(conn.recv(timeout=10))
            if msg["type"] == "event" and msg["payload"]["stream"] == "assistant":
                run_id = msg["payload"]["runId"]
                break
        _, runs = ws.call("status")
        assert [r["runId"] for r in runs["payload"]["activeRuns"]] == [run_id]
        _, stopped = ws.call("agent.abort", {"runId": run_id})
        assert stopped["ok"] is True
    assert upstream.wait_for_disconnect(30)
