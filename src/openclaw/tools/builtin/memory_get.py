"""``memory_get``: lines of one memory file (``MEMORY.md`` or ``memory/**/*.md``)."""

from __future__ import annotations

import asyncio

import orjson
from pydantic import Field

from openclaw.tools import workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult
from openclaw.tools.builtin import read
from openclaw.tools.memory_index import is_memory_path


class MemoryGetArgs(Args):
    path: str = Field(min_length=1, description="MEMORY.md, or a file under memory/.")
    from_line: int = Field(1, alias="from", ge=1, description="First line (1-based).")
    lines: int | None = Field(None, ge=1, le=2000, description="How many lines.")


async def run(args: MemoryGetArgs, ctx: ToolContext) -> ToolResult:
    target = workspace.resolve(ctx.workspace, args.path, workspace_only=True)
    rel = workspace.shown(ctx.workspace, target)
    if not is_memory_path(rel):
        raise ToolError("Only MEMORY.md and markdown files under memory/ can be read here.")
    if not target.is_file():
        raise ToolError(f"No memory file `{rel}`.")
    text = await asyncio.to_thread(target.read_text, "utf-8", "replace")
    lines = text.splitlines()[args.from_line - 1 :]
    if args.lines is not None:
        lines = lines[: args.lines]
    # As `read`: at most 50 KB at a time, and where to go on.
    kept: list[str] = []
    size = 0
    for line in lines:
        size += len(line.encode()) + 1
        if size > read.MAX_BYTES:
            if not kept:
                kept.append(read.cut(line, read.MAX_BYTES))
            break
        kept.append(line)
    body: dict[str, object] = {"path": rel, "text": "\n".join(kept)}
    if len(kept) < len(lines) or (kept and kept[-1] != lines[len(kept) - 1]):
        body["truncated"] = True
        body["nextFrom"] = args.from_line + len(kept)
    return ToolResult(orjson.dumps(body).decode())


TOOL = Tool(
    name="memory_get",
    group="memory",
    description="Read lines of a memory file (MEMORY.md or memory/*.md).",
    args=MemoryGetArgs,
    run=run,
)
