"""A run's events: the one source every door consumes.

The runner yields them, in order, to the door that started the run (``AgentRunner.stream``):
every event, and the run waits while that door is slow (lossless, backpressured).  It also
publishes each to the ``EventBus`` for observers (other sockets watching a run or a session):
bounded queues that drop what a slow observer cannot take, counted and logged.

``event_payload`` is the one JSON shape of an event (``{stream, data}``), used by the WebSocket
and by observers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from openclaw.errors import OpenClawError
from openclaw.logs import get_logger
from openclaw.messages import StopReason, TextDelta, ToolCallDelta, Usage

ALL_RUNS = "*"
QUEUE_SIZE = 1024

log = get_logger("events")


@dataclass(frozen=True, slots=True)
class RunStarted:
    agent_id: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run is over: "end" (answered and stored), "error" or "aborted" (the client left)."""

    phase: Literal["end", "error", "aborted"]
    stop_reason: StopReason
    usage: Usage | None = None
    error: OpenClawError | None = None


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """A server tool call is about to run (``args`` as the model sent them, redacted)."""

    tool_call_id: str
    name: str
    args: Any


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A server tool call is done; ``summary``: the start of its (redacted) result."""

    tool_call_id: str
    name: str
    is_error: bool
    duration_ms: int
    summary: str


RunEvent = RunStarted | TextDelta | ToolCallDelta | ToolStarted | ToolFinished | RunEnded


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """A run's event as observers see it: which run, which session."""

    run_id: str
    session_key: str
    event: RunEvent


def event_payload(event: RunEvent) -> tuple[str, dict[str, Any]]:
    """``(stream, data)``: how an event is shown outside the process."""
    if isinstance(event, TextDelta):
        return "assistant", {"delta": event.text}
    if isinstance(event, ToolCallDelta):
        data: dict[str, Any] = {"index": event.index, "arguments": event.arguments}
        if event.id is not None:
            data["id"] = event.id
        if event.name is not None:
            data["name"] = event.name
        return "tool_call", data
    if isinstance(event, RunStarted):
        return "lifecycle", {"phase": "start", "agentId": event.agent_id}
    if isinstance(event, ToolStarted | ToolFinished):
        return "tool", tool_data(event)
    out: dict[str, Any] = {"phase": event.phase, "stopReason": event.stop_reason}
    if event.usage is not None:
        out["usage"] = event.usage.as_dict()
    if event.error is not None:
        out["error"] = event.error.message
    return "lifecycle", out


def tool_data(event: ToolStarted | ToolFinished) -> dict[str, Any]:
    """A tool event's ``data``, the same on every door (WebSocket, chat stream extension)."""
    if isinstance(event, ToolStarted):
        return {
            "phase": "start",
            "toolCallId": event.tool_call_id,
            "name": event.name,
            "args": event.args,
        }
    return {
        "phase": "result",
        "toolCallId": event.tool_call_id,
        "name": event.name,
        "isError": event.is_error,
        "durationMs": event.duration_ms,
        "summary": event.summary,
    }


@dataclass(eq=False)
class Subscription:
    """One observer: its queue, and how many events it lost by being slow."""

    queue: asyncio.Queue[AgentEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: int = 0


class EventBus:
    """Observers by run id, session key, or every run (``ALL_RUNS``)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    @contextlib.contextmanager
    def subscribe(self, topic: str = ALL_RUNS) -> Iterator[Subscription]:
        """Events of the run or session ``topic`` (or of every run) while the block lasts."""
        sub = Subscription()
        self._subs.setdefault(topic, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[topic]
            if sub.dropped:
                log.warning(
                    "a slow event observer lost events",
                    extra={"topic": topic, "dropped": sub.dropped},
                )

    def has_listeners(self) -> bool:
        return bool(self._subs)

    def publish(self, run_id: str, session_key: str, event: RunEvent) -> None:
        """Hand ``event`` to every observer of its run, its session and all runs; never waits."""
        if not self._subs:
            return
        message = AgentEvent(run_id, session_key, event)
        for topic in (run_id, session_key, ALL_RUNS):
            for sub in self._subs.get(topic, ()):
                try:
                    sub.queue.put_nowait(message)
                except asyncio.QueueFull:
                    if not sub.dropped:
                        log.warning(
                            "an event observer is too slow; dropping", extra={"topic": topic}
                        )
                    sub.dropped += 1
