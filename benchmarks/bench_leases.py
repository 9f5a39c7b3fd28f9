"""Session leases across processes: what one costs, and how long a killed holder blocks.

Run: ``.venv/bin/python benchmarks/bench_leases.py [--kills 20]``

* ``take_release_us``: one uncontended take + release of a session's lease (the cost each
  stored-session run pays for cross-process serialisation), median of 20,000;
* ``killed_holder_ms``: another process holds a session and is SIGKILLed; the time from the
  kill until this process holds the session (p50 / max over ``--kills``): the kernel drops a
  dead process's locks at once, what is left is this process's poll interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openclaw.sessions.lease import SessionLeases

HOLDER = """
import asyncio, sys
from pathlib import Path
from openclaw.sessions.lease import SessionLeases

async def main():
    leases = SessionLeases(Path(sys.argv[1]))
    await leases.acquire("agent:main:bench")
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def take_release(state: Path, n: int) -> float:
    leases = SessionLeases(state)
    samples = []
    for i in range(n):
        key = f"agent:main:openai-user:{i % 1000}"
        t0 = time.perf_counter()
        await leases.acquire(key)
        leases.release(key)
        samples.append(time.perf_counter() - t0)
    leases.close()
    return statistics.median(samples) * 1e6


def killed_holder(state: Path) -> float:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    try:
        return asyncio.run(_wait_for_kill(state, holder.pid))
    finally:
        holder.wait()
        holder.stdout.close()


async def _wait_for_kill(state: Path, pid: int) -> float:
    leases = SessionLeases(state)
    waiting = asyncio.create_task(leases.acquire("agent:main:bench"))
    await asyncio.sleep(0.2)  # the waiter is polling at its longest interval by now
    assert not waiting.done()
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    await waiting
    blocked = time.perf_counter() - t0
    leases.close()
    return blocked * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        cost = asyncio.run(take_release(state, 20_000))
        blocked = [killed_holder(state) for _ in range(args.kills)]
    result = {
        "take_release_us": round(cost, 2),
        "killed_holder_ms_p50": round(statistics.median(blocked), 1),
        "killed_holder_ms_max": round(max(blocked), 1),
        "kills": args.kills,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
