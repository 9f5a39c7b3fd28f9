"""The runtime's WebSocket methods: ``agent`` (one run, streamed as ``agent`` events) and
``sessions.list`` / ``sessions.history`` (reading the store).

``agent`` is the same run as every other door (HTTP, ``openclaw agent --local``); only the
framing differs.  Without a ``sessionKey`` it talks to the agent's main session, like
``openclaw agent`` in the reference, so a conversation carries on across calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from openclaw.agents.registry import Agent, AgentRegistry
from openclaw.agents.runner import AgentRunner, RunParams, RunResult
from openclaw.errors import InvalidRequestError, NotFoundError, OpenClawError
from openclaw.gateway.wire import to_error
from openclaw.gateway.ws import Connection, Method
from openclaw.providers.base import ChatMessage, TextDelta
from openclaw.sessions.keys import build_key, is_valid_key, normalize_agent_id, parse_key, scope_key
from openclaw.sessions.models import SessionEntry

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAIN_SESSION = "main"


def runtime_methods() -> dict[str, Method]:
    """The methods a gateway with an agent runtime adds to ``base_methods()``."""
    return {
        "agent": agent,
        "sessions.list": sessions_list,
        "sessions.history": sessions_history,
    }


# --- targets -----------------------------------------------------------------------------------


def main_session_key(agent_id: str) -> str:
    """The agent's main session, ``agent:<id>:main``: where `openclaw agent` talks by default."""
    return build_key(agent_id, MAIN_SESSION)


def scope_session_key(raw: str, default_agent_id: str, *, param: str = "sessionKey") -> str:
    """A client's session key as a store key (``agent:`` keys kept, others under the agent)."""
    raw = raw.strip()
    try:
        key = scope_key(raw, default_agent_id)
    except ValueError:
        raise InvalidRequestError("The session key is empty.", param=param) from None
    if not is_valid_key(key) or parse_key(key) is None:
        raise InvalidRequestError(
            "Invalid session key: use `agent:<agentId>:<name>` or a plain name "
            "(at most 512 characters, no control characters).",
            param=param,
        )
    return key


def resolve_target(
    agents: AgentRegistry, agent_id: str | None, session_key: str | None
) -> tuple[Agent, str]:
    """(agent, session key) for a run; the agent named inside a key wins over ``agent_id``, as on
    every door (one set of rules)."""
    agent = agents.get(agent_id)
    if session_key is None:
        return agent, main_session_key(agent.id)
    key = scope_session_key(session_key, agent.id)
    parsed = parse_key(key)
    assert parsed is not None  # scope_session_key checked it
    if parsed.agent_id == agent.id:
        return agent, key
    return agents.get(parsed.agent_id), key


# --- payloads ----------------------------------------------------------------------------------


def result_payload(result: RunResult) -> dict[str, Any]:
    """A finished run as the ``agent`` method (and the CLI) reports it."""
    usage = result.usage
    return {
        "runId": result.run_id,
        "sessionKey": result.session_key,
        "agentId": result.agent_id,
        "text": result.text,
        "usage": usage.as_dict(),
        "stopReason": result.stop_reason,
        "model": result.model,
    }


def session_payload(entry: SessionEntry) -> dict[str, Any]:
    """One index row as ``sessions.list`` (and ``openclaw sessions list --json``) shows it."""
    return {
        "key": entry.key,
        "sessionId": entry.session_id,
        "agentId": entry.agent_id,
        "createdAt": entry.created_at,
        "updatedAt": entry.updated_at,
        "model": entry.model,
        "usage": {
            "promptTokens": entry.prompt_tokens,
            "completionTokens": entry.completion_tokens,
        },
        "ephemeral": entry.ephemeral,
    }


# --- params ------------------------------------------------------------------------------------


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"`{name}` must be a string.", param=name)
    return value


def _required_str(params: Mapping[str, Any], name: str) -> str:
    value = _opt_str(params, name)
    if value is None or not value.strip():
        raise InvalidRequestError(f"`{name}` is required and must not be empty.", param=name)
    return value


def _opt_limit(params: Mapping[str, Any]) -> int:
    value = params.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    # bool is an int subclass; `true` is not a count.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidRequestError(
            f"`limit` must be an integer from 1 to {MAX_LIMIT}.", param="limit"
        )
    return value


def _opt_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequestError(f"`{name}` must be a boolean.", param=name)
    return value


# --- methods -----------------------------------------------------------------------------------


async def agent(conn: Connection, params: dict[str, Any]) -> Any:
    """One agent run: ``agent`` events while it runs, the result as the response."""
    message = _required_str(params, "message")
    agent_id = _opt_str(params, "agentId")
    raw_key = _opt_str(params, "sessionKey")
    extra = _opt_str(params, "extraSystemPrompt")
    runtime = conn.gw.runtime
    target, key = resolve_target(runtime.agents, agent_id, raw_key)
    run = RunParams(
        message=ChatMessage(role="user", content=message),
        agent_id=target.id,
        session_key=key,
        extra_system_prompt=extra or None,
    )
    return result_payload(await stream_run(conn, runtime.runner, run, target.id))


async def stream_run(
    conn: Connection, runner: AgentRunner, run: RunParams, agent_id: str
) -> RunResult:
    """Run ``run``, sending lifecycle and assistant-delta events to ``conn``; the result."""

    async def emit(stream: str, data: dict[str, Any]) -> None:
        await conn.event(
            "agent",
            {"runId": run.run_id, "sessionKey": run.session_key, "stream": stream, "data": data},
        )

    await emit("lifecycle", {"phase": "start", "agentId": agent_id})
    result: RunResult | None = None
    try:
        # Deltas are sent from the run's own iteration (not via the event bus) so a slow socket
        # slows the run down instead of losing text.
        async with contextlib.aclosing(runner.stream(run)) as items:
            async for item in items:
                if isinstance(item, TextDelta):
                    await emit("assistant", {"delta": item.text})
                elif isinstance(item, RunResult):
                    result = item
    except (WebSocketDisconnect, WebSocketDisconnected):
        # A send failed: the client is gone, so there is no one to tell about it.
        raise
    except Exception as exc:
        error: OpenClawError = to_error(exc)
        await emit("lifecycle", {"phase": "error", "error": error.message})
        if error is exc:
            raise
        raise error from exc
    assert result is not None
    await emit("lifecycle", {"phase": "end", "stopReason": result.stop_reason})
    return result


async def sessions_list(conn: Connection, params: dict[str, Any]) -> Any:
    """The stored sessions, most recently updated first (ephemeral ones only when asked)."""
    raw_agent = _opt_str(params, "agentId")
    limit = _opt_limit(params)
    include_ephemeral = _opt_bool(params, "includeEphemeral", False)
    agent_id = None
    if raw_agent is not None:
        try:
            agent_id = normalize_agent_id(raw_agent)
        except ValueError:
            raise InvalidRequestError("`agentId` is empty.", param="agentId") from None
    entries = await conn.gw.runtime.store.list_sessions(
        agent_id, limit=limit, include_ephemeral=include_ephemeral
    )
    return {"sessions": [session_payload(entry) for entry in entries]}


async def sessions_history(conn: Connection, params: dict[str, Any]) -> Any:
    """The last ``limit`` transcript records of one session, oldest first."""
    runtime = conn.gw.runtime
    key = scope_session_key(_required_str(params, "sessionKey"), runtime.agents.default_id)
    limit = _opt_limit(params)
    entry = await runtime.store.get(key)
    if entry is None:
        raise NotFoundError(f"No session `{key}`.", param="sessionKey", code="session_not_found")
    await runtime.runner.settled(entry.key)
    records = await runtime.store.read_history(entry, max_records=limit)
    return {"sessionKey": key, "messages": [record.to_dict() for record in records]}
