"""Group commit: a turn is written at once (in its own loop step) when no write is in flight,
the turns that come meanwhile go together in the next write, and a write refused before it
starts fails its turns without stopping the ones after."""

from __future__ import annotations

import asyncio

import pytest

from openclaw.errors import StoreUnavailableError
from openclaw.sessions.base import Turn
from openclaw.sessions.commits import GroupCommit


def turn(n: int) -> Turn:
    return Turn(f"agent:main:openai:{n}", "main", True, (), None, None)


class Writer:
    """Starts a write per call; the test ends each one when it likes."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.pending: list[tuple[asyncio.Future[list[BaseException | None]], int]] = []
        self.refuse: Exception | None = None

    def start(self, turns: list[Turn]) -> asyncio.Future[list[BaseException | None]]:
        if self.refuse is not None:
            raise self.refuse
        self.batches.append([t.key for t in turns])
        fut: asyncio.Future[list[BaseException | None]] = asyncio.get_running_loop().create_future()
        self.pending.append((fut, len(turns)))
        return fut

    def finish(self) -> None:
        """The oldest write in flight commits."""
        fut, n = self.pending.pop(0)
        fut.set_result([None] * n)


async def test_the_first_turn_is_written_at_once_and_the_rest_together() -> None:
    w = Writer()
    commits = GroupCommit(w.start)
    first = commits.add(turn(1))
    assert w.batches == [["agent:main:openai:1"]]  # no waiting for another loop step
    second, third = commits.add(turn(2)), commits.add(turn(3))
    assert len(w.batches) == 1  # one write in flight at a time
    w.finish()
    await first
    await asyncio.sleep(0)  # the next write starts a step after one ends (turns may join it)
    assert w.batches[1] == ["agent:main:openai:2", "agent:main:openai:3"]
    w.finish()
    await asyncio.gather(second, third)
    await commits.drain()


async def test_a_write_refused_before_it_starts_fails_its_turns_only() -> None:
    w = Writer()
    commits = GroupCommit(w.start)
    w.refuse = OSError("closing")
    refused = commits.add(turn(1))
    with pytest.raises(StoreUnavailableError):
        await refused
    w.refuse = None
    later = commits.add(turn(2))
    assert w.batches == [["agent:main:openai:2"]]
    w.finish()
    await later
    await commits.drain()
