"""Session leases across processes: one holder at a time, released when the holder dies."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openclaw.sessions.lease import SessionLeases

HOLDER = """
import asyncio, sys
from pathlib import Path

import pytest
from openclaw.sessions.lease import SessionLeases

async def main():
    leases = SessionLeases(Path(sys.argv[1]))
    await leases.acquire(sys.argv[2])
    print("held", flush=True)
    sys.stdin.readline()  # until told (or killed)
    leases.release(sys.argv[2])
    print("released", flush=True)

asyncio.run(main())
"""


def start(state: Path, key: str) -> subprocess.Popen[str]:
    """A process that takes ``key``'s lease (waiting for it), says so, holds it until told."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state), key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def holder(state: Path, key: str) -> subprocess.Popen[str]:
    proc = start(state, key)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


async def test_a_lease_held_by_another_process_waits_until_released(tmp_path: Path) -> None:
    other = holder(tmp_path, "agent:main:openai-user:a")
    leases = SessionLeases(tmp_path)
    try:
        # Another session is free meanwhile.
        await leases.acquire("agent:main:openai-user:b")
        leases.release("agent:main:openai-user:b")
        waiting = asyncio.create_task(leases.acquire("agent:main:openai-user:a"))
        # The holder polls the lease itself: it cannot be taken while the other process has it.
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write("go\n")
        other.stdin.flush()
        assert other.stdout.readline() == "released\n"
        await asyncio.wait_for(waiting, 30)
        leases.release("agent:main:openai-user:a")
    finally:
        other.kill()
        other.communicate()
        leases.close()


async def test_a_killed_holder_releases_at_once(tmp_path: Path) -> None:
    other = holder(tmp_path, "k")
    leases = SessionLeases(tmp_path)
    try:
        waiting = asyncio.create_task(leases.acquire("k"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        other.kill()
        other.communicate()
        await asyncio.wait_for(waiting, 30)
    finally:
        leases.close()


async def test_a_waiting_process_is_let_in_before_the_holder_takes_it_again(
    tmp_path: Path,
) -> None:
    """Fairness: this process holds the lease and has more runs queued; another process waits.
    When this one's next run starts, it lets the other in first."""
    leases = SessionLeases(tmp_path)
    await leases.acquire("k")
    waiter = start(tmp_path, "k")
    try:
        # The other process marks itself waiting (the byte after the lease).
        while not _waiting_for(leases, "k"):  # noqa: ASYNC110 - another process's lock
            await asyncio.sleep(0.005)
        leases.release("k")
        again = asyncio.create_task(leases.acquire("k"))
        assert waiter.stdout is not None and waiter.stdout.readline() == "held\n"
        assert not again.done()
        assert waiter.stdin is not None
        waiter.stdin.write("go\n")
        waiter.stdin.flush()
        await asyncio.wait_for(again, 30)
    finally:
        waiter.kill()
        waiter.communicate()
        leases.close()


def _waiting_for(leases: SessionLeases, key: str) -> bool:
    from openclaw.sessions.lease import lease_offset

    return leases._others_waiting(lease_offset(key))


TRY = """
import asyncio, sys
from pathlib import Path

import pytest
from openclaw.sessions.lease import SessionLeases

async def main():
    leases = SessionLeases(Path(sys.argv[1]))
    try:
        await asyncio.wait_for(leases.acquire(sys.argv[2]), 0.5)
    except TimeoutError:
        print("blocked")
    else:
        print("taken")

asyncio.run(main())
"""


def test_opening_and_closing_the_lock_file_keeps_the_leases(tmp_path: Path) -> None:
    """A tool reading ``sessions.lock`` (open, close) must not end this process's leases."""
    import asyncio as aio

    leases = SessionLeases(tmp_path)
    aio.run(leases.acquire("k"))
    try:
        with open(tmp_path / "sessions.lock", "rb") as f:
            f.read()
        other = subprocess.run(
            [sys.executable, "-c", TRY, str(tmp_path), "k"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.stdout.strip() == "blocked"
    finally:
        leases.close()


@pytest.mark.skipif(sys.platform != "linux", reason="open-file-description locks: Linux")
def test_lock_calls_keep_the_gil_and_still_see_other_processes(tmp_path: Path) -> None:
    """On Linux the lock calls go to libc without releasing the GIL (a release hands it to the
    store's I/O thread under load); a lock another process holds is still refused, and a
    release after an acquire frees the byte it took."""
    import asyncio as aio

    from openclaw.sessions import lease

    assert lease._ofd_setlk is not lease._fcntl_releasing_gil
    other = holder(tmp_path, "held")
    leases = SessionLeases(tmp_path)
    try:
        offset = lease.lease_offset("held")
        assert not leases._lock(fcntl.LOCK_EX | fcntl.LOCK_NB, offset)
        aio.run(leases.acquire("free"))
        assert leases._offsets == {"free": lease.lease_offset("free")}
        leases.release("free")
        assert leases._offsets == {}
        probe = subprocess.run(
            [sys.executable, "-c", TRY, str(tmp_path), "free"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.stdout.strip() == "taken"
    finally:
        other.kill()
        other.communicate()
        leases.close()


def test_a_lock_call_failing_otherwise_raises(tmp_path: Path) -> None:
    """Only a refusal is False; any other failure of the call (here a closed descriptor) is an
    error, as with ``fcntl.fcntl``."""
    leases = SessionLeases(tmp_path)
    fd = leases._fd
    os.close(fd)
    try:
        with pytest.raises(OSError):
            leases._lock(fcntl.LOCK_EX | fcntl.LOCK_NB, 0)
    finally:
        leases._fd = -1
