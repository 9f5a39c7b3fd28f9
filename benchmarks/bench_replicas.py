"""Gateway replicas on one PostgreSQL database (``session.store: "postgres"``).

1. Throughput: c=32 stateful requests (``user`` sessions, so every run reads and writes the
   shared store) spread over 1, 2 and 3 gateway processes, each with its own state dir as on
   separate machines, against one database on this machine; beside one gateway on the embedded
   store in the same rounds.  Reports req/s, each configuration's ratio to one replica, and where
   the CPU goes (gateways, PostgreSQL, the load client) per request.
2. A session's lease (a PostgreSQL advisory lock): one take + release, and how long a SIGKILLed
   holder blocks the session.
3. The PostgreSQL store's own per-run cost (what the runner asks of it: a stored session's
   start, ``load``, then its turn's commit, ``record_turn``; a per-request session only the
   commit) at 1,000 and at 100,000 stored sessions: the ratio should stay near 1.

    .venv/bin/python benchmarks/bench_replicas.py [--quick] [--url URL]

Results go to ``benchmarks/results/replicas.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from bench_gateway import environment
from bench_sessions import AGENT, HISTORY, SEED_RECORDS, bench_key, pct, turn
from clients import Target, run_load
from common import CONNECTIONS, HERE
from processes import CLK_TCK, Proc, processes, settle, spawn_gateway, spawn_upstream

from openclaw.messages import Usage
from openclaw.sessions.base import Turn
from openclaw.sessions.keys import ephemeral_key
from openclaw.sessions.postgres import PostgresSessionLeases, PostgresSessionStore

MINIMAL = {"tools": {"profile": "minimal"}}
DEFAULT_URL = os.environ.get(
    "OPENCLAW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL server process (the postmaster and its backends)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
        if name.startswith(b"postgres"):
            fields = raw.rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def split(n: int, parts: int) -> list[int]:
    """``n`` as ``parts`` near-equal whole numbers."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def spread_load(targets: list[Target], total: int, duration: float) -> dict[str, Any]:
    """``total`` requests over ``CONNECTIONS`` connections split evenly among ``targets``."""
    procs = [t.proc for t in targets if t.proc is not None]
    gw0 = [p.cpu_seconds() for p in procs]
    pg0 = postgres_cpu()
    t0 = time.perf_counter()

    async def go() -> list[Any]:
        share = max(1, total // len(targets))
        return await asyncio.gather(
            *(
                run_load(t.port, t.requests(), share, duration, conns)
                for t, conns in zip(targets, split(CONNECTIONS, len(targets)), strict=True)
            )
        )

    runs = uvloop.run(go())
    wall = time.perf_counter() - t0
    settled = max((settle(p) for p in procs), default=0.0)
    done = sum(r.done for r in runs)
    errors = sum(r.errors for r in runs)
    if errors:
        raise RuntimeError(f"{errors} failed requests")
    gw_cpu = sum(p.cpu_seconds() for p in procs) - sum(gw0)
    pg_cpu = postgres_cpu() - pg0
    latencies = sorted(x for r in runs for x in r.latencies)
    return {
        "requests": done,
        "sustained_rps": round(done / (wall + settled), 1),
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "gateway_cpu_us_per_req": round(gw_cpu / done * 1e6, 1),
        "postgres_cpu_us_per_req": round(pg_cpu / done * 1e6, 1),
    }


def throughput(url: str, quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 5
    total = 2000 if quick else 6000
    schema = f"bench_replicas_{uuid.uuid4().hex[:8]}"
    pg = {"store": "postgres", "postgres": {"url": url, "schema": schema}}
    configs: dict[str, list[Target]] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp_name,
            processes() as procs,
        ):
            tmp = Path(tmp_name)
            up = spawn_upstream()
            procs.append(up)
            replicas: list[Proc] = []
            for i in range(3):
                replicas.append(
                    spawn_gateway(f"pg-{i}", tmp, up.port, config={**MINIMAL, "session": pg})
                )
            embedded = spawn_gateway("sqlite", tmp, up.port, config=MINIMAL)
            procs += [*replicas, embedded]

            def targets(name: str, gws: list[Proc]) -> list[Target]:
                return [Target(name, p.port, "openclaw", stateful=True, proc=p) for p in gws]

            configs = {
                "sqlite-1": targets("sqlite", [embedded]),
                "postgres-1": targets("pg", replicas[:1]),
                "postgres-2": targets("pg", replicas[:2]),
                "postgres-3": targets("pg", replicas),
            }
            for ts in configs.values():
                spread_load(ts, 600, 20)  # warm-up (and every user session made once)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
            names = list(configs)
            for r in range(rounds):
                for name in names if r % 2 == 0 else reversed(names):
                    print(f"  round {r + 1}: {name}", flush=True)
                    runs[name].append(spread_load(configs[name], total, 60))
    finally:
        asyncio.run(_drop_schema(url, schema))
    out: dict[str, Any] = {}
    for name, results in runs.items():
        ranked = sorted(results, key=lambda x: x["sustained_rps"])
        out[name] = {**ranked[len(ranked) // 2], "rps_all": [x["sustained_rps"] for x in results]}
    one = out["postgres-1"]["sustained_rps"]
    out["ratios"] = {
        "postgres-2 / postgres-1": round(out["postgres-2"]["sustained_rps"] / one, 2),
        "postgres-3 / postgres-1": round(out["postgres-3"]["sustained_rps"] / one, 2),
        "postgres-1 / sqlite-1": round(one / out["sqlite-1"]["sustained_rps"], 2),
    }
    return out


async def _drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def fill(url: str, schema: str, start: int, stop: int) -> None:
    """Session rows ``start..stop-1`` (no records), mostly per-request ones like real use."""
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        now = time.time()
        rows = [
            (bench_key(i), f"00000000-0000-4000-8000-{i:012d}", AGENT, now - i, now - i,
             "bench/model", 100, 20, i % 10 != 0, 1, 0)
            for i in range(start, stop)
        ]  # fmt: skip
        await conn.copy_records_to_table(
            "oc_sessions",
            records=rows,
            columns=[
                "key", "session_id", "agent_id", "created_at", "updated_at", "model",
                "prompt_tokens", "completion_tokens", "ephemeral", "turns", "records",
            ],
        )  # fmt: skip
        await conn.execute("ANALYZE oc_sessions")
    finally:
        await conn.close()


PG_HOLDER = """
import asyncio, sys
from openclaw.sessions.postgres import PostgresSessionLeases

async def main():
    leases = PostgresSessionLeases(sys.argv[1], schema=sys.argv[2], max_held=1)
    await leases.start()
    await leases.acquire("agent:main:bench")
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def lease_cost(url: str, takes: int, kills: int) -> dict[str, Any]:
    """A session's advisory-lock lease: one uncontended take + release (what a stored-session
    run pays for order across replicas), and how long a SIGKILLed holder blocks its session
    (the server drops a dead client's locks when its connection closes)."""
    schema = f"bench_lease_{uuid.uuid4().hex[:8]}"
    leases = PostgresSessionLeases(url, schema=schema, max_held=4)
    await leases.start()
    try:
        samples = []
        for i in range(takes):
            key = f"agent:main:openai-user:{i % 1000}"
            t0 = time.perf_counter()
            await leases.acquire(key)
            leases.release(key)
            samples.append(time.perf_counter() - t0)
        blocked = []
        for _ in range(kills):
            holder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PG_HOLDER, url, schema, stdout=asyncio.subprocess.PIPE
            )
            assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
            waiting = asyncio.create_task(leases.acquire("agent:main:bench"))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            t0 = time.perf_counter()
            holder.kill()
            await waiting
            blocked.append((time.perf_counter() - t0) * 1000)
            leases.release("agent:main:bench")
            await holder.wait()
    finally:
        await leases.aclose()
    return {
        "take_release_us_p50": round(statistics.median(samples) * 1e6, 1),
        "killed_holder_blocks_ms_p50": round(statistics.median(blocked), 1),
        "killed_holder_blocks_ms_max": round(max(blocked), 1),
    }


async def one_run(store: PostgresSessionStore, key: str, i: int, *, ephemeral: bool) -> None:
    """What the runner does with the store for one request: a stored session's start (the
    session and its last records, one call), then its turn's commit."""
    if not ephemeral:
        await store.load(key, AGENT, max_records=HISTORY)
    records = tuple(turn(i))
    await store.record_turn(Turn(key, AGENT, ephemeral, records, "bench/model", Usage(250, 150)))


async def measure(store: PostgresSessionStore, size: int, runs: int) -> dict[str, list[float]]:
    """Microseconds per run: continuing a stored session (with a 60-record transcript), and a
    new per-request one."""
    rng = random.Random(size)
    stored = range(0, size, 10)  # every tenth pre-filled session is a stored one
    keys = [bench_key(i) for i in rng.sample(stored, min(runs, len(stored)))]
    for n, key in enumerate(keys):  # untimed: give each chosen session a real transcript
        entry = await store.get_or_create(key, AGENT, ephemeral=False)
        seed = [r for i in range(SEED_RECORDS // 2) for r in turn(n * 1000 + i)]
        await store.append(entry, seed, model=None, usage=None)
    for i in range(20):  # warm-up
        await one_run(store, keys[i], i, ephemeral=False)
    timings: dict[str, list[float]] = {"existing": [], "new": []}
    for i, key in enumerate(keys):
        t0 = time.perf_counter_ns()
        await one_run(store, key, i, ephemeral=False)
        timings["existing"].append((time.perf_counter_ns() - t0) / 1000)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        await one_run(store, ephemeral_key(AGENT), i, ephemeral=True)
        timings["new"].append((time.perf_counter_ns() - t0) / 1000)
    return timings


async def store_cost(url: str, runs: int) -> dict[str, Any]:
    schema = f"bench_store_{uuid.uuid4().hex[:8]}"
    results: dict[int, dict[str, list[float]]] = {}
    store = PostgresSessionStore(url, schema=schema, pool_size=4)
    await store.open()
    try:
        filled = 0
        for size in (1_000, 100_000):
            await fill(url, schema, filled, size)
            filled = size
            results[size] = await measure(store, size, runs)
    finally:
        await store.close()
        await _drop_schema(url, schema)
    out: dict[str, Any] = {}
    for size, cases in results.items():
        out[str(size)] = {
            case: {"p50_us": round(pct(v, 50)), "p95_us": round(pct(v, 95))}
            for case, v in cases.items()
        }
    out["ratio_100k_over_1k_p50"] = {
        case: round(pct(results[100_000][case], 50) / pct(results[1_000][case], 50), 2)
        for case in ("existing", "new")
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=None, help="store-cost runs per size")
    args = parser.parse_args()
    result: dict[str, Any] = {"quick": args.quick, "connections": CONNECTIONS}
    print("session leases ...", flush=True)
    result["leases"] = asyncio.run(lease_cost(args.url, 2000, 5 if args.quick else 20))
    print(json.dumps(result["leases"]))
    print("store cost at 1k and 100k sessions ...", flush=True)
    result["store_cost"] = asyncio.run(
        store_cost(args.url, args.runs or (300 if args.quick else 1000))
    )
    print(json.dumps(result["store_cost"], indent=1))
    print("throughput over replicas ...", flush=True)
    result["throughput"] = throughput(args.url, args.quick)
    result["environment"] = environment()
    print(json.dumps(result["throughput"], indent=1))
    out = HERE / "results" / "replicas.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
