"""Paths a tool is given, resolved in the agent's workspace and (with ``tools.fs.workspaceOnly``,
the default) kept inside it: ``..``, absolute paths and symlinks that lead out are refused."""

from __future__ import annotations

import os
from pathlib import Path

from openclaw.tools.base import ToolError


def resolve(workspace: Path, path: str, *, workspace_only: bool) -> Path:
    """``path`` (relative to ``workspace``, or absolute) with every symlink followed; ToolError
    when it leads out of the workspace and that is not allowed."""
    if not path or "\x00" in path:
        raise ToolError("The path is empty or contains a NUL byte.")
    root = workspace.resolve()
    given = Path(path)
    if path.startswith("~"):
        if workspace_only:
            raise ToolError(f"The path `{path}` is outside the agent's workspace.")
        try:
            given = given.expanduser()
        except RuntimeError:  # ~someone who does not exist
            raise ToolError(f"No such home folder in `{path}`.") from None
    target = (root / given).resolve()
    if workspace_only and not target.is_relative_to(root):
        raise ToolError(f"The path `{path}` is outside the agent's workspace.")
    return target


def shown(workspace: Path, target: Path) -> str:
    """``target`` as the model should see it: relative to the workspace when inside it."""
    root = workspace.resolve()
    return str(target.relative_to(root)) if target.is_relative_to(root) else os.fspath(target)
