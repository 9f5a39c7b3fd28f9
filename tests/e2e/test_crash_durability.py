"""Durable before answered: a gateway killed with SIGKILL under load never loses a turn it
answered.

Clients with their own OpenAI ``user`` sessions (every third turn streamed), plus clients with
per-request sessions, send turns one after another to a real ``openclaw gateway run`` process.
Each round the process is SIGKILLed once a seeded random number of turns has been answered (so
the kill lands in every phase of the other clients' requests: upstream call, commit, reply on
the wire), then started again on the same state dir.  Afterwards, every turn that got a complete
answer (a 200 with the whole reply; for a stream, ``data: [DONE]``) must be in its session's
history exactly once, in order, with its reply; and every model call must have seen every turn
its session had answered before.

With ``gateway.workers: 2`` the same, but each kill takes one worker (the supervisor starts it
again while the other serves, and the clients carry on), and after each the store is opened and
every session read whole.

Short version in the default test run (``KILLS`` = 20); the long one::

    OPENCLAW_CRASH_KILLS=100 .venv/bin/python -m pytest -s tests/e2e/test_crash_durability.py

(``OPENCLAW_CRASH_SEED`` picks another seed.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from openclaw.sessions import SqliteSessionStore, user_key
from openclaw.sessions.postgres import PostgresSessionStore
from tests.e2e.processes import ENABLED, TOKEN, GatewayProcess
from tests.postgres import require_postgres
from tests.upstream import FakeUpstream

KILLS = int(os.environ.get("OPENCLAW_CRASH_KILLS", "20"))
SEED = int(os.environ.get("OPENCLAW_CRASH_SEED", "8"))
USERS = [f"user-{i}" for i in range(6)]
EPHEMERAL_CLIENTS = [f"anon-{i}" for i in range(2)]
# Answered turns in a round before the kill: at least a few, so every round has load.
KILL_AFTER = (5, 60)

pytestmark = pytest.mark.timeout(120 + 10 * KILLS)


@dataclass
class Ledger:
    """What the clients were told."""

    next_turn: dict[str, int] = field(default_factory=dict)
    answered: dict[str, list[int]] = field(default_factory=dict)  # client -> turn numbers
    ephemeral: list[tuple[str, str]] = field(default_factory=list)  # (session key, text)
    unanswered: int = 0
    problems: list[str] = field(default_factory=list)  # anything but a dead connection

    def total_answered(self) -> int:
        return sum(map(len, self.answered.values())) + len(self.ephemeral)


def _text(client: str, n: int) -> str:
    return f"{client} turn {n}"


def _parse_text(text: str) -> tuple[str, int] | None:
    client, sep, n = text.partition(" turn ")
    return (client, int(n)) if sep and n.isdigit() else None


async def _send(
    http: aiohttp.ClientSession, port: int, text: str, *, user: str | None, stream: bool
) -> tuple[str | None, str | None]:
    """One turn: (session key, problem).  A dead connection raises ``aiohttp.ClientError``."""
    body: dict[str, Any] = {"model": "openclaw", "messages": [{"role": "user", "content": text}]}
    if user is not None:
        body["user"] = user
    if stream:
        body["stream"] = True
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    ) as resp:
        key = resp.headers.get("x-openclaw-session-key")
        if resp.status != 200:
            return key, f"{text!r}: HTTP {resp.status} {await resp.text()}"
        want = f"Echo: {text}"
        if not stream:
            reply = orjson.loads(await resp.read())
            got = reply["choices"][0]["message"]["content"]
            return key, None if got == want else f"{text!r}: reply {got!r}"
        parts: list[str] = []
        finish = None
        async for line in resp.content:
            if line == b"data: [DONE]\n":
                got = "".join(parts)
                if got != want or finish != "stop":
                    return key, f"{text!r}: streamed {got!r}, finish {finish!r}"
                return key, None
            if line.startswith(b"data: "):
                chunk = orjson.loads(line[6:])
                if "error" in chunk:
                    return key, f"{text!r}: stream error {chunk['error']}"
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
                    finish = choice["finish_reason"] or finish
        raise aiohttp.ClientPayloadError("stream ended without [DONE]")


async def _client(
    name: str,
    port: int,
    ledger: Ledger,
    stop: asyncio.Event,
    answered: asyncio.Queue[None],
    carry_on: bool = False,
) -> None:
    """Turns one after another until the gateway dies under it (or the round is over); with
    ``carry_on``, past a dead connection (another worker takes the next turn)."""
    stored = name in USERS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while not stop.is_set():
            n = ledger.next_turn.get(name, 0)
            ledger.next_turn[name] = n + 1
            text = _text(name, n)
            try:
                key, problem = await _send(
                    http, port, text, user=name if stored else None, stream=n % 3 == 2
                )
            except (aiohttp.ClientError, ConnectionError):
                ledger.unanswered += 1  # killed mid-turn: it may or may not be stored
                if carry_on:
                    continue
                return
            if problem is not None:
                ledger.problems.append(problem)
                return
            if stored:
                ledger.answered.setdefault(name, []).append(n)
            else:
                assert key is not None
                ledger.ephemeral.append((key, text))
            answered.put_nowait(None)


async def _round(tmp: Path, config: dict[str, Any], ledger: Ledger, kill_after: int) -> None:
    gw = await asyncio.to_thread(GatewayProcess, tmp, config)
    try:
        stop = asyncio.Event()
        answered: asyncio.Queue[None] = asyncio.Queue()
        clients = [
            asyncio.create_task(_client(name, gw.port, ledger, stop, answered))
            for name in (*USERS, *EPHEMERAL_CLIENTS)
        ]
        all_done = asyncio.ensure_future(asyncio.gather(*clients))
        for _ in range(kill_after):
            got = asyncio.ensure_future(answered.get())
            await asyncio.wait({got, all_done}, return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                break  # every client stopped: a problem, reported below
        gw.proc.kill()
        stop.set()
        await all_done
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
        await asyncio.to_thread(gw.proc.wait)
        gw.close()


Opener = Callable[[], Any]  # a store to open (``async with``) on the gateway's data


async def _stored_history(
    open_store: Opener,
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(user sessions' records, per-request sessions' records by key), read after the kills."""
    users: dict[str, list[Any]] = {}
    async with open_store() as store:
        for name in USERS:
            entry = await store.get(user_key("main", name))
            users[name] = [] if entry is None else await store.read_history(entry, max_records=None)
        ephemeral: dict[str, list[Any]] = {}
        for entry in await store.list_sessions("main", limit=1_000_000, include_ephemeral=True):
            if entry.ephemeral:
                ephemeral[entry.key] = await store.read_history(entry, max_records=None)
    return users, ephemeral


def _check_user_session(name: str, answered: list[int], records: list[Any]) -> list[str]:
    """Every answered turn once, in order; every stored turn whole (followed by its reply)."""
    problems = []
    turns: list[int] = []
    replies: dict[int, str] = {}
    for i, record in enumerate(records):
        if record.role != "user":
            continue
        parsed = _parse_text(record.content)
        if parsed is None or parsed[0] != name:
            problems.append(f"{name}: foreign record {record.content!r}")
            continue
        turns.append(parsed[1])
        nxt = records[i + 1] if i + 1 < len(records) else None
        if nxt is not None and nxt.role == "assistant":
            replies[parsed[1]] = nxt.content
        if replies.get(parsed[1]) != f"Echo: {record.content}":
            # Turns are committed whole: a lone or half-written turn is a write that leaked.
            problems.append(f"{name}: stored turn {parsed[1]} is not followed by its reply")
    if turns != sorted(set(turns)):
        problems.append(f"{name}: turns stored out of order or twice: {turns}")
    stored = set(turns)
    for n in answered:
        if n not in stored:
            problems.append(f"{name}: answered turn {n} is missing from the history")
        elif replies.get(n) != f"Echo: {_text(name, n)}":
            problems.append(f"{name}: answered turn {n} has reply {replies.get(n)!r}")
    return problems


def _check_model_saw_history(up: FakeUpstream, ledger: Ledger) -> list[str]:
    """Each model call of a stored session carried every turn answered before it."""
    problems = []
    answered = {name: set(turns) for name, turns in ledger.answered.items()}
    for req in up.requests:
        messages = (req.body or {}).get("messages") or []
        texts = [m["content"] for m in messages if m.get("role") == "user"]
        parsed = _parse_text(texts[-1]) if texts else None
        if parsed is None or parsed[0] not in USERS:
            continue
        name, n = parsed
        seen = {_parse_text(t) for t in texts}
        for m in sorted(answered.get(name, ())):
            if m < n and (name, m) not in seen:
                problems.append(f"{name}: the model call for turn {n} did not see turn {m}")
    return problems


def _config(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        **ENABLED,
        "models": {
            "providers": {
                "up": {
                    "api": "openai-completions",
                    "baseUrl": upstream.base_url,
                    "maxRetries": 0,
                    "models": [{"id": "m"}],
                }
            }
        },
        "agents": {"defaults": {"model": "up/m", "maxHistoryMessages": 100_000}},
        "session": {"maintenance": {"ephemeralMaxCount": 1_000_000}},
    }


async def test_answered_turns_survive_sigkill(upstream: FakeUpstream, tmp_path: Path) -> None:
    await _kill_loop(
        upstream, tmp_path, _config(upstream), lambda: SqliteSessionStore(tmp_path / "state"), KILLS
    )


async def test_answered_turns_survive_sigkill_on_postgres(
    upstream: FakeUpstream, tmp_path: Path, pg_schema: str
) -> None:
    """The same on the shared store (half the kills: the embedded store's loop is the long
    one): each turn is one statement, committed before its reply's last bytes leave."""
    url = require_postgres()
    config = _config(upstream)
    config["session"] = {
        **config["session"],
        "store": "postgres",
        "postgres": {"url": url, "schema": pg_schema},
    }
    await _kill_loop(
        upstream,
        tmp_path,
        config,
        lambda: PostgresSessionStore(url, schema=pg_schema),
        max(5, KILLS // 2),
    )


async def _kill_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    config: dict[str, Any],
    open_store: Opener,
    kills: int,
) -> None:
    rng = random.Random(SEED)
    ledger = Ledger()
    for _ in range(kills):
        await _round(tmp_path, config, ledger, rng.randint(*KILL_AFTER))
        assert not ledger.problems, ledger.problems
        await _store_opens(open_store)
    await _check_all(upstream, ledger, open_store, kills)


async def test_answered_turns_survive_sigkill_of_workers(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    config = _config(upstream)
    config["gateway"] = {**config["gateway"], "workers": 2}
    ledger = Ledger()
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    try:
        stop = asyncio.Event()
        answered: asyncio.Queue[None] = asyncio.Queue()
        clients = [
            asyncio.create_task(_client(name, gw.port, ledger, stop, answered, carry_on=True))
            for name in (*USERS, *EPHEMERAL_CLIENTS)
        ]
        for _ in range(KILLS):
            for _ in range(rng.randint(*KILL_AFTER)):
                await asyncio.wait_for(answered.get(), 60)
            workers = _children(gw.proc.pid)
            victim = rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
            # Started again by the supervisor while the other worker serves.
            while len(now := _children(gw.proc.pid)) < 2 or victim in now:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert not ledger.problems, ledger.problems
            await _store_opens(lambda: SqliteSessionStore(tmp_path / "state"))
        stop.set()
        await asyncio.gather(*clients)
        assert await asyncio.to_thread(gw.stop) == 0
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
        gw.close()
    assert gw.log.count("starting it again") == KILLS
    await _check_all(upstream, ledger, lambda: SqliteSessionStore(tmp_path / "state"), KILLS)


async def _store_opens(open_store: Opener) -> None:
    """After a kill: the store opens and the stored sessions' transcripts read (a torn last
    line skipped); the whole check is at the end."""
    async with open_store() as store:
        for name in USERS:
            entry = await store.get(user_key("main", name))
            if entry is not None:
                await store.read_history(entry, max_records=None)
        assert await store.list_sessions("main", limit=10, include_ephemeral=True) is not None


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _check_all(
    upstream: FakeUpstream, ledger: Ledger, open_store: Opener, kills: int
) -> None:
    users, ephemeral = await _stored_history(open_store)
    problems = []
    for name in USERS:
        problems += _check_user_session(name, ledger.answered.get(name, []), users[name])
    for key, text in ledger.ephemeral:
        got = [(r.role, r.content) for r in ephemeral.get(key, [])]
        if got != [("user", text), ("assistant", f"Echo: {text}")]:
            problems.append(f"per-request session {key} ({text!r}) holds {got}")
    problems += _check_model_saw_history(upstream, ledger)
    assert not problems, "\n".join(problems[:50])
    # The run really was under load and really was cut short, many times.
    assert ledger.total_answered() >= kills * KILL_AFTER[0]
    assert ledger.unanswered >= kills
    print(
        f"\n{kills} SIGKILLs (seed {SEED}): {ledger.total_answered()} answered turns "
        f"({len(ledger.ephemeral)} per-request), {ledger.unanswered} cut short; "
        "every answered turn stored once, in order"
    )
