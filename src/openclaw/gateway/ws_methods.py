"""The runtime's WebSocket methods: ``agent`` (one run, its events streamed as ``agent`` events),
``agent.abort`` (stop one), ``sessions.list`` / ``sessions.history`` (reading the store) and
``sessions.delete``.

``agent`` is the same run as every other door (HTTP, ``openclaw agent --local``); only the
framing differs.  Without a ``sessionKey`` it talks to the agent's main session, like
``openclaw agent`` in the reference, so a conversation carries on across calls.  Params are
validated by pydantic models, as the HTTP bodies are.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from openclaw.agents.events import RunEnded, RunEvent
from openclaw.agents.registry import AgentRegistry
from openclaw.agents.runner import AgentRunner, RunParams, RunResult
from openclaw.errors import InvalidRequestError, NotFoundError
from openclaw.gateway.images import load_images
from openclaw.gateway.protocol import agent_event, result_payload, session_payload
from openclaw.gateway.state import AbortableRun
from openclaw.gateway.ws import Connection, Method
from openclaw.messages import ChatMessage, TextPart, Usage
from openclaw.sessions.keys import (
    Target,
    in_namespace,
    namespace_of,
    normalize_agent_id,
    owned,
    scoped_key,
)

MAX_LIMIT = 1000
# Records read back to find how a stopped run's turn was stored (its last assistant record).
STOP_LOOKBACK = 200
INVALID_KEY = (
    "Invalid session key: use `agent:<agentId>:<name>` or a plain name "
    "(at most 512 characters, no control characters)."
)

P = TypeVar("P", bound="_Params")


def runtime_methods() -> dict[str, Method]:
    """The methods a gateway with an agent runtime adds to ``base_methods()``."""
    return {
        "agent": agent,
        "agent.abort": agent_abort,
        "sessions.list": sessions_list,
        "sessions.history": sessions_history,
        "sessions.delete": sessions_delete,
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
    images: list[StrictStr] = Field([], description="a list of image data: URIs")


class AbortParams(_Params):
    run_id: StrictStr = NonEmpty


class SessionsListParams(_Params):
    agent_id: StrictStr | None = Field(None, min_length=1, pattern=r"\S", description="an agent id")
    limit: StrictInt = Limit
    include_ephemeral: StrictBool = Field(False, description="a boolean")
    search: StrictStr | None = Field(None, max_length=512, description="a string")


class SessionsHistoryParams(_Params):
    session_key: StrictStr = NonEmpty
    limit: StrictInt = Limit


class SessionKeyParams(_Params):
    session_key: StrictStr = NonEmpty


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
    """One agent run: its events as ``agent`` events while it runs, the result as the response.
    A run stopped by ``agent.abort`` answers with ``stopReason: "aborted"``."""
    p = parse_params(AgentParams, params)
    runtime = conn.gw.runtime
    run = RunParams(
        message=await _user_message(conn, p),
        target=_target(runtime.agents, p.agent_id, p.session_key, conn.identity),
        extra_system_prompt=p.extra_system_prompt or None,
    )
    task = asyncio.current_task()
    assert task is not None
    entry = conn.gw.ws_runs[run.run_id] = AbortableRun(task, conn.identity)
    try:
        return result_payload(await stream_run(conn, runtime.runner, run))
    except asyncio.CancelledError:
        # Stopped by agent.abort alone (not also by the client leaving or a shutdown): the run
        # ended as a disconnect ends it (its partial turn stored as aborted); say so.
        if not entry.aborted or task.uncancel() > 0:
            raise
        return await _stopped(conn, run)
    finally:
        conn.gw.ws_runs.pop(run.run_id, None)


async def _stopped(conn: Connection, run: RunParams) -> dict[str, Any]:
    """The answer of a run ``agent.abort`` stopped: as its turn was stored.  A stop that came
    after the answer was complete, while its turn was being committed, leaves the turn whole;
    the answer says so rather than "aborted"."""
    runner, store = conn.gw.runtime.runner, conn.gw.runtime.store
    await runner.settled(run.target.key)
    entry = await store.get(run.target.key)
    records = [] if entry is None else await store.read_history(entry, max_records=STOP_LOOKBACK)
    mine = [r for r in records if r.run_id == run.run_id and r.role == "assistant"]
    stop = mine[-1].stop_reason if mine else None
    out: dict[str, Any] = {
        "runId": run.run_id,
        "sessionKey": run.target.key,
        "agentId": run.target.agent_id,
        "stopReason": stop if stop is not None and stop != "aborted" else "aborted",
    }
    if out["stopReason"] == "aborted":
        ended = RunEnded("aborted", "aborted")
    else:
        usage = sum((r.usage for r in mine if r.usage is not None), Usage())
        out |= {
            "text": "\n\n".join(str(r.content) for r in mine if r.content),
            "usage": usage.as_dict(),
            "model": mine[-1].model,
        }
        ended = RunEnded("end", out["stopReason"], usage)
    await conn.event("agent", agent_event(run.run_id, run.target.key, ended))
    return out


async def _user_message(conn: Connection, p: AgentParams) -> ChatMessage:
    """The run's message: its text, and the images attached (data: URIs, within the chat
    completions endpoint's limits)."""
    if not p.images:
        return ChatMessage(role="user", content=p.message)
    if not all(url.startswith("data:") for url in p.images):
        raise InvalidRequestError("`images` must be data: URIs.", param="images")
    limits = conn.gw.config.gateway.http.endpoints.chat_completions
    images = await load_images(p.images, limits, param="images")
    return ChatMessage(role="user", content=(TextPart(p.message), *images))


async def agent_abort(conn: Connection, params: dict[str, Any]) -> Any:
    """Stop a run this caller started over the WebSocket (on this process), as a disconnect
    would: the upstream call is closed and the partial turn stored as aborted.  Answers once the
    run has ended."""
    p = parse_params(AbortParams, params)
    entry = conn.gw.ws_runs.get(p.run_id)
    if entry is None or entry.identity != conn.identity:
        raise NotFoundError(
            f"No run `{p.run_id}` in progress here.", param="runId", code="run_not_found"
        )
    entry.aborted = True
    entry.task.cancel()
    await asyncio.wait([entry.task])
    return {"runId": p.run_id, "aborted": True}


async def stream_run(conn: Connection, runner: AgentRunner, run: RunParams) -> RunResult:
    """Run ``run``, sending each of its events to ``conn`` (awaited by the run itself, so a
    slow socket slows the run down instead of losing text); the result."""

    async def emit(item: object) -> None:
        if not isinstance(item, RunResult):
            event = cast(RunEvent, item)  # what a run emits: its events, then its result
            await conn.event("agent", agent_event(run.run_id, run.target.key, event))

    return await runner.execute(run, emit)


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
        search=p.search,
    )
    mine = [entry for entry in entries if owned(entry.key, namespace)][: p.limit]
    return {"sessions": [session_payload(entry) for entry in mine]}


async def sessions_history(conn: Connection, params: dict[str, Any]) -> Any:
    """The last ``limit`` transcript records of one session, oldest first."""
    p = parse_params(SessionsHistoryParams, params)
    runtime = conn.gw.runtime
    key = _own_key(conn, p.session_key)
    entry = await runtime.store.get(key)
    if entry is None:
        raise NotFoundError(f"No session `{key}`.", param="sessionKey", code="session_not_found")
    await runtime.runner.settled(entry.key)
    records = await runtime.store.read_history(entry, max_records=p.limit)
    return {"sessionKey": key, "messages": [record.to_dict() for record in records]}


async def sessions_delete(conn: Connection, params: dict[str, Any]) -> Any:
    """Delete one stored session and its transcript (refused, ``session_busy``, while a run on
    it is in progress in any worker: stop it first)."""
    p = parse_params(SessionKeyParams, params)
    runtime = conn.gw.runtime
    key = _own_key(conn, p.session_key)
    # No run on it here or in another worker while it goes; its last turn is written first.
    async with runtime.runner.exclusive(key):
        deleted = await runtime.store.delete(key)
    if not deleted:
        raise NotFoundError(f"No session `{key}`.", param="sessionKey", code="session_not_found")
    return {"sessionKey": key, "deleted": True}


def _own_key(conn: Connection, session_key: str) -> str:
    """``session_key`` as a stored key, within the caller's own space of sessions."""
    try:
        return in_namespace(
            scoped_key(session_key, conn.gw.runtime.agents.default_id),
            namespace_of(conn.identity),
        )
    except ValueError:
        raise InvalidRequestError(INVALID_KEY, param="sessionKey") from None
