"""The in-process event bus: agent events keyed by run id, for any listener (the WebSocket's
`agent` method, logs, tests).  Publishing costs one dict lookup when nobody listens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Stream = Literal["lifecycle", "assistant", "usage"]
ALL_RUNS = "*"
QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class AgentEvent:
    run_id: str
    stream: Stream
    data: dict[str, Any]
    session_key: str | None = None


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Queue[AgentEvent]]] = {}

    @contextlib.contextmanager
    def subscribe(self, run_id: str = ALL_RUNS) -> Iterator[asyncio.Queue[AgentEvent]]:
        """A bounded queue of the events of ``run_id`` (or of every run)."""
        queue: asyncio.Queue[AgentEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subs.setdefault(run_id, set()).add(queue)
        try:
            yield queue
        finally:
            subs = self._subs.get(run_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[run_id]

    def has_listeners(self, run_id: str) -> bool:
        return bool(self._subs) and (run_id in self._subs or ALL_RUNS in self._subs)

    def publish(self, event: AgentEvent) -> None:
        if not self._subs:
            return
        for key in (event.run_id, ALL_RUNS):
            for queue in self._subs.get(key, ()):
                # A listener too slow to keep up loses events rather than stalling the run.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
