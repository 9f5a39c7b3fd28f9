"""``edit``: replace one exact piece of text in a file of the workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import AliasChoices, Field

from openclaw.tools import workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult


class EditArgs(Args):
    path: str = Field(
        validation_alias=AliasChoices("path", "file_path"),
        description="File to edit, relative to the workspace.",
    )
    old_text: str = Field(
        alias="oldText",
        validation_alias=AliasChoices("oldText", "old_string"),
        min_length=1,
        description="Text to replace; it must occur exactly once in the file.",
    )
    new_text: str = Field(
        alias="newText",
        validation_alias=AliasChoices("newText", "new_string"),
        description="Text to put in its place.",
    )


def _edit(path: Path, old: str, new: str) -> int:
    """Replace the one occurrence; the 1-based line where the change starts."""
    if not path.is_file():
        raise ToolError(f"No file `{path.name}` in the workspace.")
    text = path.read_text("utf-8")
    count = text.count(old)
    if count == 0:
        raise ToolError("`oldText` was not found in the file.")
    if count > 1:
        raise ToolError(f"`oldText` occurs {count} times; include more context to pick one.")
    if old == new:
        raise ToolError("`oldText` and `newText` are the same: nothing would change.")
    at = text.index(old)
    path.write_text(text[:at] + new + text[at + len(old) :], "utf-8")
    return text.count("\n", 0, at) + 1


async def run(args: EditArgs, ctx: ToolContext) -> ToolResult:
    target = workspace.resolve(
        ctx.workspace, args.path, workspace_only=ctx.config.fs.workspace_only
    )
    line = await asyncio.to_thread(_edit, target, args.old_text, args.new_text)
    shown = workspace.shown(ctx.workspace, target)
    return ToolResult(f"Edited {shown} at line {line}.", details={"path": shown, "line": line})


TOOL = Tool(
    name="edit",
    group="fs",
    description=(
        "Replace one exact piece of text in a workspace file: oldText must occur exactly once."
    ),
    args=EditArgs,
    run=run,
    changes_host=True,
)
