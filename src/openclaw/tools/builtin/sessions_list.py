"""``sessions_list``: the agent's own stored sessions, most recently active first."""

from __future__ import annotations

import orjson
from pydantic import Field

from openclaw.sessions.keys import owned
from openclaw.tools.base import Args, Tool, ToolContext, ToolResult


class SessionsListArgs(Args):
    limit: int = Field(20, ge=1, le=100, description="How many sessions.")


async def run(args: SessionsListArgs, ctx: ToolContext) -> ToolResult:
    # A caller with its own space of sessions sees those only (more are read, then filtered).
    fetch = args.limit if ctx.namespace is None else args.limit * 20
    entries = [
        e
        for e in await ctx.store.list_sessions(ctx.agent_id, limit=fetch, include_ephemeral=False)
        if owned(e.key, ctx.namespace)
    ][: args.limit]
    sessions = [
        {
            "sessionKey": e.key,
            "updatedAt": e.updated_at,
            "model": e.model,
            "current": e.key == ctx.session_key,
        }
        for e in entries
    ]
    return ToolResult(orjson.dumps({"sessions": sessions}).decode())


TOOL = Tool(
    name="sessions_list",
    group="sessions",
    description="List this agent's stored conversations (session keys), most recent first.",
    args=SessionsListArgs,
    run=run,
)
