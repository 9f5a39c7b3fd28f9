"""Which async PostgreSQL driver for the shared store: asyncpg or psycopg 3, on the store's own
per-run work (read a session's last records; in one transaction bump its row and append a turn's
two records), with C concurrent clients against the same server, alternating drivers by round.

    .venv/bin/python benchmarks/bench_pg_drivers.py [--url URL] [--clients 8] [--runs 2000]

Reports runs/s and the client process's CPU per run for each driver, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

SCHEMA = f"bench_drivers_{uuid.uuid4().hex[:8]}"
SETUP = [
    f"CREATE SCHEMA {SCHEMA}",
    f"CREATE TABLE {SCHEMA}.sessions (key TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL, tokens BIGINT NOT NULL DEFAULT 0,"
    " next_seq BIGINT NOT NULL DEFAULT 0)",
    f"CREATE TABLE {SCHEMA}.records (session_id TEXT NOT NULL, seq BIGINT NOT NULL,"
    " line TEXT NOT NULL, PRIMARY KEY (session_id, seq))",
]
BUMP = (
    f"INSERT INTO {SCHEMA}.sessions AS s (key, session_id, updated_at, tokens, next_seq)"
    " VALUES ($1, $2, $3, $4, 2) ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at,"
    " tokens = s.tokens + excluded.tokens, next_seq = s.next_seq + 2"
    " RETURNING session_id, next_seq - 2"
)
INSERT = f"INSERT INTO {SCHEMA}.records (session_id, seq, line) VALUES ($1, $2, $3), ($1, $4, $5)"
TAIL = f"SELECT line FROM {SCHEMA}.records WHERE session_id = $1 ORDER BY seq DESC LIMIT 50"
LINE = '{"role":"user","content":"' + "x" * 200 + '","timestamp":1.0}'


def _psycopg(sql: str) -> str:
    out = sql
    for i in range(9, 0, -1):
        out = out.replace(f"${i}", "%s")
    return out


async def run_asyncpg(url: str, key: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        sid = str(uuid.uuid4())
        for _ in range(n):
            await conn.fetch(TAIL, sid)
            async with conn.transaction():
                row = await conn.fetchrow(BUMP, key, sid, time.time(), 10)
                start = row[1]
                await conn.execute(INSERT, row[0], start, LINE, start + 1, LINE)
    finally:
        await conn.close()


async def run_psycopg(url: str, key: str, n: int) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0)
    tail, bump = _psycopg(TAIL), _psycopg(BUMP)
    insert = (
        f"INSERT INTO {SCHEMA}.records (session_id, seq, line) VALUES (%s, %s, %s), (%s, %s, %s)"
    )
    try:
        sid = str(uuid.uuid4())
        for _ in range(n):
            cur = await conn.execute(tail, (sid,))
            await cur.fetchall()
            async with conn.transaction():
                cur = await conn.execute(bump, (key, sid, time.time(), 10))
                row = await cur.fetchone()
                assert row is not None
                start = row[1]
                await conn.execute(insert, (row[0], start, LINE, row[0], start + 1, LINE))
    finally:
        await conn.close()


async def measure(
    name: str, fn: Callable[[str, str, int], Awaitable[None]], url: str, clients: int, runs: int
) -> dict[str, Any]:
    per = runs // clients
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(fn(url, f"{name}-{i}-{uuid.uuid4().hex[:6]}", per) for i in range(clients))
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "driver": name,
        "runs_per_s": per * clients / wall,
        "cpu_us_per_run": cpu / (per * clients) * 1e6,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "OPENCLAW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    admin = await asyncpg.connect(args.url)
    for statement in SETUP:
        await admin.execute(statement)
    try:
        results: dict[str, list[dict[str, Any]]] = {"asyncpg": [], "psycopg": []}
        for _ in range(args.rounds):
            for name, fn in (("asyncpg", run_asyncpg), ("psycopg", run_psycopg)):
                results[name].append(await measure(name, fn, args.url, args.clients, args.runs))
        best = {name: max(rs, key=lambda r: r["runs_per_s"]) for name, rs in results.items()}
        for name, r in best.items():
            print(
                f"{name:8s} {r['runs_per_s']:8.0f} runs/s  {r['cpu_us_per_run']:6.0f} us CPU/run (client)"
            )
        ratio = best["asyncpg"]["runs_per_s"] / best["psycopg"]["runs_per_s"]
        cpu = best["psycopg"]["cpu_us_per_run"] / best["asyncpg"]["cpu_us_per_run"]
        print(f"asyncpg / psycopg: x{ratio:.2f} runs/s, x{cpu:.2f} less client CPU per run")
    finally:
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
