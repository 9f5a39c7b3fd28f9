"""``sessions_history``: the last messages of one of the agent's own sessions (tool messages
only when asked; long messages cut, and said so)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field

from openclaw.sessions.keys import in_namespace, parse_key, scoped_key
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult

MAX_MESSAGE_CHARS = 2000


class SessionsHistoryArgs(Args):
    session_key: str = Field(alias="sessionKey", min_length=1, description="The session's key.")
    limit: int = Field(20, ge=1, le=100, description="How many messages, the newest.")
    include_tools: bool = Field(
        False, alias="includeTools", description="Include tool calls and results."
    )


def _message(record: Any) -> dict[str, Any] | None:
    if record.role not in ("user", "assistant", "tool"):
        return None
    content = record.content if isinstance(record.content, str) else "[non-text content]"
    out: dict[str, Any] = {"role": record.role, "content": content[:MAX_MESSAGE_CHARS]}
    if len(content) > MAX_MESSAGE_CHARS:
        out["truncated"] = True
    return out


async def run(args: SessionsHistoryArgs, ctx: ToolContext) -> ToolResult:
    try:
        key = in_namespace(scoped_key(args.session_key, ctx.agent_id), ctx.namespace)
    except ValueError:
        raise ToolError(f"`{args.session_key}` is not a session key.") from None
    parsed = parse_key(key)
    if parsed is None or parsed.agent_id != ctx.agent_id:
        raise ToolError("Only this agent's own sessions can be read.")
    entry = await ctx.store.get(key)
    if entry is None:
        raise ToolError(f"No session `{key}`.")
    records = await ctx.store.read_history(entry, max_records=args.limit * 4)
    messages = []
    for record in records:
        if record.role == "tool" and not args.include_tools:
            continue
        msg = _message(record)
        if msg is not None:
            messages.append(msg)
    body = {"sessionKey": key, "messages": messages[-args.limit :]}
    return ToolResult(orjson.dumps(body).decode())


TOOL = Tool(
    name="sessions_history",
    group="sessions",
    description="Read the latest messages of one of this agent's stored conversations.",
    args=SessionsHistoryArgs,
    run=run,
)
