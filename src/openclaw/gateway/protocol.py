"""The JSON shapes of the gateway's own protocol (the WebSocket methods, and the CLI's ``--json``
output, which mirrors them): a finished run, a stored session, a run's event."""

from __future__ import annotations

from typing import Any

from openclaw.agents.events import RunEvent, event_payload
from openclaw.agents.runner import RunResult
from openclaw.sessions.models import SessionEntry


def result_payload(result: RunResult) -> dict[str, Any]:
    """A finished run as the ``agent`` method (and the CLI) reports it."""
    return {
        "runId": result.run_id,
        "sessionKey": result.session_key,
        "agentId": result.agent_id,
        "text": result.text,
        "usage": result.usage.as_dict(),
        "stopReason": result.stop_reason,
        "model": result.model,
    }


def session_payload(entry: SessionEntry) -> dict[str, Any]:
    """One index row as ``sessions.list`` (and ``openclaw sessions list --json``) shows it."""
    usage = entry.usage
    return {
        "key": entry.key,
        "sessionId": entry.session_id,
        "agentId": entry.agent_id,
        "createdAt": entry.created_at,
        "updatedAt": entry.updated_at,
        "model": entry.model,
        "usage": {
            "promptTokens": usage.prompt_tokens,
            "completionTokens": usage.completion_tokens,
        },
        "ephemeral": entry.ephemeral,
        "turns": entry.turns,
    }


def agent_event(run_id: str, session_key: str, event: RunEvent) -> dict[str, Any]:
    """The payload of an ``agent`` event frame."""
    stream, data = event_payload(event)
    return {"runId": run_id, "sessionKey": session_key, "stream": stream, "data": data}
