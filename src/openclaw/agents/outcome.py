"""What one model call produced and how it ended (``TurnOutcome``), filled in as its events
arrive, and the transcript write it becomes (``transcript_turn``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from openclaw.agents.history import record_content, reset_record
from openclaw.errors import OpenClawError
from openclaw.messages import ChatMessage, StopReason, TextDelta, ToolCall, ToolCallDelta, Usage
from openclaw.providers.base import Finished, ProviderEvent
from openclaw.sessions.base import Turn
from openclaw.sessions.models import TranscriptRecord

# The gateway's secrets cut out of a text (``tools.redact.Redactor``).
Redact = Callable[[str], str]

Status = Literal["running", "done", "error", "aborted"]


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAccumulator:
    """Tool calls assembled from their streamed pieces, in the order of their indexes."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def add(self, delta: ToolCallDelta) -> None:
        call = self._calls.setdefault(delta.index, _PartialCall())
        call.id = delta.id or call.id
        call.name = delta.name or call.name
        call.arguments.append(delta.arguments)

    def calls(self) -> tuple[ToolCall, ...]:
        if not self._calls:
            return ()  # most answers: asked several times a run
        return tuple(
            ToolCall(c.id or f"call_{i}", c.name, "".join(c.arguments) or "{}")
            for i, c in sorted(self._calls.items())
        )


@dataclass(slots=True)
class TurnOutcome:
    """One model call's result so far.  ``status`` stays "running" until the call ends; a run
    cancelled before that (the client left) is "aborted"."""

    ref: str  # the model that answers: the primary, or the fallback that took over
    status: Status = "running"
    parts: list[str] = field(default_factory=list)
    tool_calls: ToolCallAccumulator = field(default_factory=ToolCallAccumulator)
    usage: Usage | None = None
    finish: StopReason = "stop"
    error: OpenClawError | None = None

    def take(self, ref: str, event: ProviderEvent) -> None:
        self.ref = ref
        if isinstance(event, TextDelta):
            self.parts.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self.tool_calls.add(event)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finished):
            self.finish = event.stop_reason

    def fail(self, error: OpenClawError) -> None:
        self.status, self.error = "error", error

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def stop_reason(self) -> StopReason:
        """As stored: the model's reason when it finished, else how the run ended."""
        if self.status == "done":
            return self.finish
        return "error" if self.status == "error" else "aborted"


@dataclass(frozen=True, slots=True)
class ToolResultRecord:
    """One server tool call of a round and what it returned (already redacted)."""

    call: ToolCall
    text: str
    is_error: bool
    duration_ms: int


@dataclass(slots=True)
class ToolRound:
    """A model call that asked for server tools, and their results."""

    outcome: TurnOutcome
    results: list[ToolResultRecord]


@dataclass(slots=True)
class RunState:
    """A whole run: the tool rounds so far and the model call in progress (the last one)."""

    current: TurnOutcome
    rounds: list[ToolRound] = field(default_factory=list)
    # The last answer's server calls, when it also called client tools (the run ends there).
    final_results: list[ToolResultRecord] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Every call's text in order, a blank line between two non-empty ones: what the
        stream showed."""
        if not self.rounds:
            return self.current.text  # a run without tool rounds: most of them
        return "\n\n".join(
            t for t in (*(r.outcome.text for r in self.rounds), self.current.text) if t
        )

    @property
    def usage(self) -> Usage | None:
        if not self.rounds:
            return self.current.usage
        usages = [u for u in (*(r.outcome.usage for r in self.rounds), self.current.usage) if u]
        if not usages:
            return None
        total = usages[0]
        for u in usages[1:]:
            total = total + u
        return total


def _assistant(
    outcome: TurnOutcome, calls: tuple[ToolCall, ...], run_id: str, redact: Redact
) -> TranscriptRecord:
    meta: dict[str, object] = {}
    if calls:
        meta["toolCalls"] = [replace(c, arguments=redact(c.arguments)).as_dict() for c in calls]
    if outcome.usage is not None and outcome.usage.estimated:
        meta["usageEstimated"] = True
    if outcome.error is not None:
        err = outcome.error
        meta["error"] = {"type": err.error_type, "code": err.code, "message": err.message}
    return TranscriptRecord(
        role="assistant",
        content=outcome.text,
        timestamp=time.time(),
        run_id=run_id,
        usage=outcome.usage,
        stop_reason=outcome.stop_reason,
        model=outcome.ref,
        meta=meta or None,
    )


def _tool_result(result: ToolResultRecord, run_id: str, redact: Redact) -> TranscriptRecord:
    return TranscriptRecord(
        role="tool",
        content=result.text,
        timestamp=time.time(),
        run_id=run_id,
        meta={
            "toolCallId": result.call.id,
            "toolName": result.call.name,
            "arguments": redact(result.call.arguments),
            "isError": result.is_error,
            "durationMs": result.duration_ms,
        },
    )


def transcript_turn(
    key: str,
    agent_id: str,
    ephemeral: bool,
    *,
    inputs: Sequence[ChatMessage],
    state: RunState,
    run_id: str,
    started: float,
    reset_to: list[ChatMessage] | None,
    redact: Redact = str,
    fence: int | None = None,
) -> Turn:
    """The run's transcript write: a history reset when the client's history replaced the
    stored one (``reset_to``), the turn's input messages, then each tool round (the assistant's
    message with its calls, each call's result) and the last answer."""
    records: list[TranscriptRecord] = []
    if reset_to is not None:
        records.append(reset_record(reset_to, started, run_id))
    for part in inputs:
        records.append(
            TranscriptRecord(
                role=part.role,
                content=record_content(part),
                timestamp=started,
                run_id=run_id,
                meta={"toolCallId": part.tool_call_id} if part.tool_call_id else None,
            )
        )
    for round_ in state.rounds:
        records.append(
            _assistant(round_.outcome, round_.outcome.tool_calls.calls(), run_id, redact)
        )
        records.extend(_tool_result(r, run_id, redact) for r in round_.results)
    final = state.current
    records.append(_assistant(final, final.tool_calls.calls(), run_id, redact))
    records.extend(_tool_result(r, run_id, redact) for r in state.final_results)
    return Turn(
        key=key,
        agent_id=agent_id,
        ephemeral=ephemeral,
        records=tuple(records),
        model=final.ref,
        usage=state.usage,
        fence=fence,
    )
