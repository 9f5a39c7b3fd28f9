"""``write``: create or overwrite a file of the workspace (parent folders made as needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import AliasChoices, Field

from openclaw.tools import workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult


class WriteArgs(Args):
    path: str = Field(
        validation_alias=AliasChoices("path", "file_path"),
        description="File to write, relative to the workspace.",
    )
    content: str = Field(description="The whole new content of the file.")


def _write(path: Path, content: str) -> int:
    if path.is_dir():
        raise ToolError(f"`{path.name}` is a directory.")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode()
    path.write_bytes(data)
    return len(data)


async def run(args: WriteArgs, ctx: ToolContext) -> ToolResult:
    target = workspace.resolve(
        ctx.workspace, args.path, workspace_only=ctx.config.fs.workspace_only
    )
    size = await asyncio.to_thread(_write, target, args.content)
    shown = workspace.shown(ctx.workspace, target)
    return ToolResult(f"Wrote {size} bytes to {shown}.", details={"path": shown, "bytes": size})


TOOL = Tool(
    name="write",
    group="fs",
    description="Create or overwrite a file in the workspace with the given content.",
    args=WriteArgs,
    run=run,
    changes_host=True,
)
