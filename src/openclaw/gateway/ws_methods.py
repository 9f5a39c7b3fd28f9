"""The runtime's WebSocket methods: ``agent`` (one run, its events streamed as ``agent`` events)
and ``sessions.list`` / ``sessions.history`` (reading the store).

``agent`` is the same run as every other door (HTTP, ``openclaw agent --local``); only the
framing differs.  Without a ``sessionKey`` it talks to the agent's main session, like
``openclaw agent`` in the reference, so a conversation carries on across calls.  Params are
validated by pydantic models, as the HTTP bodies are.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from openclaw.agents.registry import AgentRegistry
from openclaw.agents.runner import AgentRunner, RunParams, RunResult
from openclaw.errors import InvalidRequestError, NotFoundError
from openclaw.gateway.protocol import agent_event, result_payload, session_payload
from openclaw.gateway.ws import Connection, Method
from openclaw.messages import ChatMessage
from openclaw.sessions.keys import (
    Target,
    in_namespace,
    namespace_of,
    normalize_agent_id,
    owned,
    scoped_key,
)

MAX_LIMIT = 1000
INVALID_KEY = (
    "Invalid session key: use `agent:<agentId>:<name>` or a plain name "
    "(at most 512 characters, no control characters)."
)

P = TypeVar("P", bound="_Params")


def runtime_methods() -> dict[str, Method]:
    """The methods a gateway with an agent runtime adds to ``base_methods()``."""
    return {
        "agent": agent,
        "sessions.list": sessions_list,
        "sessions.history": sessions_history,
    }


# --- params ------------------------------------------------------------------------------------


class _Params(BaseModel):
    """camelCase on the wire; unknown params ignored (clients may be newer than us)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, frozen=True)


NonEmpty = Field(min_length=1, pattern=r"\S", description="a non-empty string")
Limit = Field(100, ge=1, le=MAX_LIMIT, description=f"an integer from 1 to {MAX_LIMIT}")


class AgentParams(_Params):
    message: StrictStr = NonEmpty
    agent_id: StrictStr | None = Field(None, description="a string")
    session_key: StrictStr | None = Field(None, description="a string")
    extra_system_prompt: StrictStr | None = Field(None, description="a string")


class SessionsListParams(_Params):
    agent_id: StrictStr | None = Field(None, min_length=1, pattern=r"\S", description="an agent id")
    limit: StrictInt = Limit
    include_ephemeral: StrictBool = Field(False, description="a boolean")


class SessionsHistoryParams(_Params):
    session_key: StrictStr = NonEmpty
    limit: StrictInt = Limit


def parse_params(model: type[P], params: dict[str, Any]) -> P:
    """``params`` as ``model``; the first problem as a 400 naming the param."""
    try:
        # A null param means "the default", as if it were not there.
        return model.model_validate({k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "params"
        field = next((f for f in model.model_fields.values() if f.alias == name), None)
        hint = field.description if field is not None else None
        if error["type"] == "missing":
            message = f"`{name}` is required" + (f": {hint}." if hint else ".")
        else:
            message = f"`{name}` must be {hint or 'valid'}."
        raise InvalidRequestError(message, param=name) from None


def _target(
    agents: AgentRegistry, agent_id: str | None, session_key: str | None, identity: str
) -> Target:
    try:
        return agents.target(
            agent_id, session_key=session_key, default="main", namespace=namespace_of(identity)
        )
    except ValueError:
        raise InvalidRequestError(INVALID_KEY, param="sessionKey") from None


# --- methods -----------------------------------------------------------------------------------


async def agent(conn: Connection, params: dict[str, Any]) -> Any:
    """One agent run: its events as ``agent`` events while it runs, the result as the response."""
    p = parse_params(AgentParams, params)
    runtime = conn.gw.runtime
    run = RunParams(
        message=ChatMessage(role="user", content=p.message),
        target=_target(runtime.agents, p.agent_id, p.session_key, conn.identity),
        extra_system_prompt=p.extra_system_prompt or None,
    )
    return result_payload(await stream_run(conn, runtime.runner, run))


async def stream_run(conn: Connection, runner: AgentRunner, run: RunParams) -> RunResult:
    """Run ``run``, sending each of its events to ``conn`` (from the run's own iteration, so a
    slow socket slows the run down instead of losing text); the result."""
    result: RunResult | None = None
    async with contextlib.aclosing(runner.stream(run)) as events:
        async for item in events:
            if isinstance(item, RunResult):
                result = item
            else:
                await conn.event("agent", agent_event(run.run_id, run.target.key, item))
    assert result is not None
    return result


async def sessions_list(conn: Connection, params: dict[str, Any]) -> Any:
    """The stored sessions, most recently updated first (ephemeral ones only when asked)."""
    p = parse_params(SessionsListParams, params)
    agent_id = None if p.agent_id is None else normalize_agent_id(p.agent_id)
    namespace = namespace_of(conn.identity)
    # A caller with its own space of sessions sees those only (more are read, then filtered).
    entries = await conn.gw.runtime.store.list_sessions(
        agent_id,
        limit=p.limit if namespace is None else p.limit * 20,
        include_ephemeral=p.include_ephemeral and namespace is None,
    )
    mine = [entry for entry in entries if owned(entry.key, namespace)][: p.limit]
    return {"sessions": [session_payload(entry) for entry in mine]}


async def sessions_history(conn: Connection, params: dict[str, Any]) -> Any:
    """The last ``limit`` transcript records of one session, oldest first."""
    p = parse_params(SessionsHistoryParams, params)
    runtime = conn.gw.runtime
    try:
        key = in_namespace(
            scoped_key(p.session_key, runtime.agents.default_id), namespace_of(conn.identity)
        )
    except ValueError:
        raise InvalidRequestError(INVALID_KEY, param="sessionKey") from None
    entry = await runtime.store.get(key)
    if entry is None:
        raise NotFoundError(f"No session `{key}`.", param="sessionKey", code="session_not_found")
    await runtime.runner.settled(entry.key)
    records = await runtime.store.read_history(entry, max_records=p.limit)
    return {"sessionKey": key, "messages": [record.to_dict() for record in records]}
