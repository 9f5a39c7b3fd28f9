"""``read``: a text file of the workspace, a window of lines at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import AliasChoices, Field

from openclaw.tools import workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult

MAX_LINES = 2000
MAX_BYTES = 50 * 1024


class ReadArgs(Args):
    path: str = Field(
        validation_alias=AliasChoices("path", "file_path"),
        description="File to read, relative to the workspace.",
    )
    offset: int = Field(1, ge=1, description="First line to show (1-based).")
    limit: int | None = Field(None, ge=1, description="How many lines to show at most.")


def _window(path: Path, offset: int, limit: int | None) -> tuple[str, int, int, int]:
    """(text, first line, last line, lines in the file) of the window asked for, capped."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ToolError(f"`{path.name}` is a binary file, not text.")
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    total = len(lines)
    if total and offset > total:
        raise ToolError(f"Offset {offset} is past the end of the file ({total} lines).")
    out: list[str] = []
    size = 0
    last = offset - 1
    for line in lines[offset - 1 : offset - 1 + min(limit or MAX_LINES, MAX_LINES)]:
        size += len(line.encode())
        if size > MAX_BYTES:
            if not out:  # one line longer than the cap on its own: its start
                out.append(cut(line, MAX_BYTES) + f"\n[Line {offset} is cut at 50 KB.]")
                last += 1
            break
        out.append(line)
        last += 1
    return "".join(out), offset, last, total


def cut(text: str, max_bytes: int) -> str:
    """The start of ``text`` that fits in ``max_bytes`` of UTF-8 (no character split)."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


async def run(args: ReadArgs, ctx: ToolContext) -> ToolResult:
    target = workspace.resolve(
        ctx.workspace, args.path, workspace_only=ctx.config.fs.workspace_only
    )
    if not target.is_file():
        raise ToolError(f"No file `{args.path}` in the workspace.")
    text, first, last, total = await asyncio.to_thread(_window, target, args.offset, args.limit)
    if last < total:
        text += f"\n[Showing lines {first}-{last} of {total}. Use offset={last + 1} to continue.]"
    return ToolResult(
        text, details={"path": workspace.shown(ctx.workspace, target), "lines": total}
    )


TOOL = Tool(
    name="read",
    group="fs",
    description=(
        "Read a text file from the workspace. Shows at most 2000 lines or 50 KB at a time; "
        "use offset and limit to read on."
    ),
    args=ReadArgs,
    run=run,
)
