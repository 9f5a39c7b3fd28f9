"""A bounded soak: many clients, mixed load, injected faults; nothing lost, nothing leaking.

Run (about 20,000 requests; a few minutes)::

    .venv/bin/python -m tests.soak.soak [--requests 20000] [--clients 64] [--seed 1]

A real ``openclaw gateway run`` against the suite's scripted upstream. ``--clients`` clients send
``--requests`` requests in all: half with their own ``user`` session, half per request; every
other request streamed; 2% of streaming requests are abandoned after their first event (the
client disconnects), and 2% of model calls fail (an upstream 500, a connection dropped before
the answer, a stream cut after two tokens). Reported: requests served, errors by kind (only the
injected kinds may appear), latency p50/p99, the gateway's RSS and open file descriptors after
the first 1,000 requests and at the end, and whether every answered ``user`` turn is in its
session's transcript. ``tests/soak/test_soak.py`` runs a short version in the default tests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from openclaw.sessions import SqliteSessionStore, user_key
from tests.e2e.processes import TOKEN, GatewayProcess
from tests.upstream import Answer, Drop, FakeUpstream, HttpError, StreamAbort

DISCONNECT_RATE = 0.02
FAULT_RATE = 0.02
# What an injected fault may look like to a client; anything else is a defect.
INJECTED = {
    "502 upstream_unavailable",
    "502 upstream_error",
    "stream upstream_unavailable",
    "stream upstream_error",
}


@dataclass
class Report:
    requests: int = 0
    answered: int = 0
    disconnected: int = 0
    faults_scripted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    rss_mb_after_1000: float = 0.0
    rss_mb_end: float = 0.0
    fds_after_1000: int = 0
    fds_end: int = 0
    user_turns_answered: int = 0
    user_turns_missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
        "models": {
            "providers": {
                "up": {
                    "api": "openai-completions",
                    "baseUrl": up.base_url,
                    "apiKey": "soak-upstream-key",
                    "maxRetries": 0,
                    "models": [{"id": "m"}],
                }
            }
        },
        "agents": {"defaults": {"model": "up/m", "maxConcurrent": 128}},
        "tools": {"profile": "minimal"},
    }


def script_faults(up: FakeUpstream, total: int, rng: random.Random) -> int:
    """Queue one behaviour per model call to come: mostly answers, FAULT_RATE faults."""
    faults = [HttpError.server_error(), Drop(), StreamAbort(after=2)]
    behaviours: list[Any] = []
    count = 0
    for _ in range(total):
        if rng.random() < FAULT_RATE:
            behaviours.append(rng.choice(faults))
            count += 1
        else:
            behaviours.append(Answer())
    up.script(*behaviours)
    return count


async def _one(
    http: aiohttp.ClientSession,
    port: int,
    text: str,
    *,
    user: str | None,
    stream: bool,
    leave: bool,
) -> tuple[str, float]:
    """One request: its outcome ("ok", "left", or an error kind) and its latency."""
    body: dict[str, Any] = {"model": "openclaw", "messages": [{"role": "user", "content": text}]}
    if user is not None:
        body["user"] = user
    if stream:
        body["stream"] = True
    t0 = time.perf_counter()
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    ) as reply:
        if reply.status != 200:
            err = (await reply.json())["error"]
            return f"{reply.status} {err.get('code')}", time.perf_counter() - t0
        if not stream:
            data = await reply.json()
            ok = data["choices"][0]["message"]["content"] == f"Echo: {text}"
            return ("ok" if ok else "wrong reply"), time.perf_counter() - t0
        parts = []
        async for line in reply.content:
            if leave and line.startswith(b"data: "):
                reply.close()  # the client goes away mid-stream
                return "left", time.perf_counter() - t0
            if line == b"data: [DONE]\n":
                ok = "".join(parts) == f"Echo: {text}"
                return ("ok" if ok else "wrong reply"), time.perf_counter() - t0
            if line.startswith(b"data: "):
                chunk = orjson.loads(line[6:])
                if "error" in chunk:
                    return f"stream {chunk['error'].get('code')}", time.perf_counter() - t0
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
        return "stream ended without [DONE]", time.perf_counter() - t0


async def drive(
    gw: GatewayProcess, total: int, clients: int, rng: random.Random, report: Report
) -> dict[str, list[str]]:
    """Run the load; the answered turns of each ``user``."""
    issued = 0
    latencies: list[float] = []
    answered: dict[str, list[str]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    pid = gw.proc.pid

    async def client(c: int) -> None:
        nonlocal issued
        user = f"soak-{c}" if c % 2 == 0 else None
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as http:
            n = 0
            while issued < total:
                issued += 1
                if issued == 1000:
                    report.rss_mb_after_1000 = rss_mb(pid)
                    report.fds_after_1000 = open_fds(pid)
                stream = rng.random() < 0.5
                leave = stream and rng.random() < DISCONNECT_RATE
                text = f"c{c} turn {n}"
                n += 1
                outcome, latency = await _one(
                    http, gw.port, text, user=user, stream=stream, leave=leave
                )
                if outcome == "ok":
                    latencies.append(latency)
                    report.answered += 1
                    if user is not None:
                        answered[user].append(text)
                elif outcome == "left":
                    report.disconnected += 1
                else:
                    errors[outcome] += 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    report.requests = issued
    report.errors = dict(errors)
    report.unexpected = sorted(k for k in errors if k not in INJECTED)
    latencies.sort()
    report.latency_p50_ms = round(latencies[len(latencies) // 2] * 1000, 2)
    report.latency_p99_ms = round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
    return answered


async def check_transcripts(state: Path, answered: dict[str, list[str]], report: Report) -> None:
    async with SqliteSessionStore(state) as store:
        for user, texts in answered.items():
            entry = await store.get(user_key("main", user))
            records = [] if entry is None else await store.read_history(entry, max_records=None)
            stored = [r.content for r in records if r.role == "user"]
            report.user_turns_answered += len(texts)
            missing = [t for t in texts if t not in set(stored)]
            report.user_turns_missing += missing
            order = [t for t in stored if t in set(texts)]
            if order != texts:
                report.user_turns_missing.append(f"{user}: answered turns out of order")


def settled_fds(pid: int, baseline: int, within: float = 10.0) -> int:
    """Open files once the connections the clients just closed are closed on the gateway's
    side too (a loaded machine may take a moment): the first count at or under ``baseline``,
    else the last one after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (count := open_fds(pid)) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def soak(tmp: Path, total: int, clients: int, seed: int) -> Report:
    rng = random.Random(seed)
    report = Report()
    started = time.perf_counter()
    with FakeUpstream() as up:
        # Abandoned streams may stop before their model call: a few behaviours to spare.
        report.faults_scripted = script_faults(up, total + clients, rng)
        gw = GatewayProcess(tmp, config(up))
        try:
            answered = asyncio.run(drive(gw, total, clients, rng, report))
            report.rss_mb_end = rss_mb(gw.proc.pid)
            report.fds_end = settled_fds(gw.proc.pid, report.fds_after_1000)
        finally:
            gw.stop()
        asyncio.run(check_transcripts(gw.state_dir, answered, report))
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/soak.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openclaw-soak-") as tmp:
        report = soak(Path(tmp), args.requests, args.clients, args.seed)
    data = asdict(report)
    data["user_turns_missing"] = data["user_turns_missing"][:20]
    data["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
