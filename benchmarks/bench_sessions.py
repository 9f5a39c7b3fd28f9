"""Per-run cost of the session store at 1k and at 100k stored sessions.

Run: ``python benchmarks/bench_sessions.py [--runs N]``.  One "run" is what the runner does per
request: get_or_create + read_history(max_records=50) + append of 2 records.  Two cases:
``existing`` continues a random stored session that already has a 60-record transcript, ``new``
starts a fresh ephemeral session.  The point is the ratio 100k/1k, which should stay near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from openclaw.messages import Usage
from openclaw.sessions import (
    SessionEntry,
    SqliteSessionStore,
    TranscriptRecord,
    build_key,
    ephemeral_key,
)
from openclaw.sessions.bulk import import_entries

AGENT = "main"
HISTORY = 50
SEED_RECORDS = 60
FILL_BATCH = 10_000


def bench_key(i: int) -> str:
    """The key of the i-th pre-filled session."""
    return build_key(AGENT, "bench", str(i))


def filler(start: int, stop: int, now: float) -> Iterator[SessionEntry]:
    """Index rows for sessions ``start..stop-1`` (no transcripts), mostly ephemeral like real use."""
    for i in range(start, stop):
        yield SessionEntry(
            key=bench_key(i),
            session_id=f"00000000-0000-4000-8000-{i:012d}",
            agent_id=AGENT,
            created_at=now - i,
            updated_at=now - i,
            model="bench/model",
            prompt_tokens=100,
            completion_tokens=20,
            ephemeral=i % 10 != 0,
        )


async def fill(store: SqliteSessionStore, start: int, stop: int) -> None:
    """Insert rows directly, in batches, up to ``stop`` sessions."""
    now = time.time()
    for lo in range(start, stop, FILL_BATCH):
        rows = list(filler(lo, min(lo + FILL_BATCH, stop), now))
        await asyncio.to_thread(import_entries, store.state_dir, rows)


def turn(i: int) -> list[TranscriptRecord]:
    """The two records of one run: a user message and an assistant reply."""
    now = time.time()
    return [
        TranscriptRecord(role="user", content=f"question {i} " + "q" * 200, timestamp=now),
        TranscriptRecord(
            role="assistant",
            content=f"answer {i} " + "a" * 600,
            timestamp=now,
            run_id=f"run-{i}",
            usage=Usage(250, 150),
            stop_reason="stop",
            model="bench/model",
        ),
    ]


async def one_run(store: SqliteSessionStore, key: str, i: int, *, ephemeral: bool) -> None:
    """What the runner does with the store for one request."""
    entry = await store.get_or_create(key, AGENT, ephemeral=ephemeral)
    await store.read_history(entry, max_records=HISTORY)
    await store.append(entry, turn(i), model="bench/model", usage=Usage(250, 150))


async def measure(store: SqliteSessionStore, size: int, runs: int) -> dict[str, list[float]]:
    """Microseconds per run for continued and for new sessions."""
    rng = random.Random(size)
    keys = [bench_key(i) for i in rng.sample(range(size), runs)]
    for n, key in enumerate(keys):  # untimed: give each chosen session a real transcript
        entry = await store.get_or_create(key, AGENT, ephemeral=True)
        seed = [r for i in range(SEED_RECORDS // 2) for r in turn(n * 1000 + i)]
        await store.append(entry, seed, model=None, usage=None)
    for i in range(20):  # warm-up
        await one_run(store, keys[i], i, ephemeral=True)

    timings: dict[str, list[float]] = {"existing": [], "new": []}
    for i, key in enumerate(keys):
        t0 = time.perf_counter_ns()
        await one_run(store, key, i, ephemeral=True)
        timings["existing"].append((time.perf_counter_ns() - t0) / 1000)
    for i in range(runs):
        key = ephemeral_key(AGENT)
        t0 = time.perf_counter_ns()
        await one_run(store, key, i, ephemeral=True)
        timings["new"].append((time.perf_counter_ns() - t0) / 1000)
    return timings


def pct(values: list[float], p: int) -> float:
    """The p-th percentile."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def main(runs: int) -> None:
    """Fill to 1k, measure, fill to 100k, measure, print."""
    started = time.perf_counter()
    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        async with SqliteSessionStore(Path(tmp)) as store:
            filled = 0
            for size in (1_000, 100_000):
                t0 = time.perf_counter()
                await fill(store, filled, size)
                filled = size
                total = await store.count()  # includes the sessions earlier runs created
                print(f"filled to {total:,} sessions in {time.perf_counter() - t0:.2f}s")
                results[size] = await measure(store, size, runs)

    print(f"\n{runs} runs each (get_or_create + read_history({HISTORY}) + append(2 records))")
    print(f"{'sessions':>9}  {'case':<9} {'p50 µs':>8} {'p95 µs':>8}")
    for size, cases in results.items():
        for case, values in cases.items():
            print(f"{size:>9,}  {case:<9} {pct(values, 50):>8.0f} {pct(values, 95):>8.0f}")
    for case in ("existing", "new"):
        small, large = results[1_000][case], results[100_000][case]
        print(
            f"ratio 100k/1k ({case}): p50 {pct(large, 50) / pct(small, 50):.2f}"
            f"  p95 {pct(large, 95) / pct(small, 95):.2f}"
        )
    # Other work on the machine moves p95 a lot; the load tells whether a bad ratio is noise.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal {time.perf_counter() - started:.1f}s, load average {load}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed runs per size and case")
    asyncio.run(main(parser.parse_args().runs))
