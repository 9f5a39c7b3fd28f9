"""``ls``: the entries of a folder of the workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from openclaw.tools import workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult

MAX_ENTRIES = 500


class LsArgs(Args):
    path: str = Field(".", description="Folder to list, relative to the workspace.")


def _list(path: Path) -> list[str]:
    if not path.is_dir():
        raise ToolError(f"`{path.name}` is not a folder.")
    return sorted(e.name + ("/" if e.is_dir() else "") for e in path.iterdir())


async def run(args: LsArgs, ctx: ToolContext) -> ToolResult:
    target = workspace.resolve(
        ctx.workspace, args.path, workspace_only=ctx.config.fs.workspace_only
    )
    if not target.exists() and target == ctx.workspace.resolve():
        return ToolResult("(empty)")
    entries = await asyncio.to_thread(_list, target)
    text = "\n".join(entries[:MAX_ENTRIES]) or "(empty)"
    if len(entries) > MAX_ENTRIES:
        text += f"\n[{len(entries) - MAX_ENTRIES} more entries not shown]"
    return ToolResult(text, details={"entries": len(entries)})


TOOL = Tool(
    name="ls",
    group="fs",
    description="List a folder of the workspace (folders end with /).",
    args=LsArgs,
    run=run,
)
