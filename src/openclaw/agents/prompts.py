"""The system prompt of a run: the agent's own prompt, its workspace bootstrap files in a fixed
order (each capped), then the run's extra system prompt."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

BOOTSTRAP_FILES = ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md")
# Workspace files are re-read at most this often: a request never waits on five stat calls.
REFRESH_SECONDS = 2.0


def _read_bootstrap(workspace: Path, max_chars: int) -> str:
    sections = []
    for name in BOOTSTRAP_FILES:
        try:
            text = (workspace / name).read_text(encoding="utf-8", errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            continue
        if not text:
            continue
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[... {name} truncated at {max_chars} characters]"
        sections.append(f"## {name}\n{text}")
    return "\n\n".join(sections)


class BootstrapCache:
    """Bootstrap text per workspace, refreshed off the event loop every ``REFRESH_SECONDS``."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, str]] = {}

    def fresh(self, workspace: Path) -> str | None:
        """The cached text while it is fresh (the common case: no await, no thread)."""
        hit = self._cache.get(workspace)
        if hit is not None and time.monotonic() - hit[0] < REFRESH_SECONDS:
            return hit[1]
        return None

    async def get(self, workspace: Path, max_chars: int) -> str:
        now = time.monotonic()
        hit = self._cache.get(workspace)
        if hit is not None and now - hit[0] < REFRESH_SECONDS:
            return hit[1]
        text = await asyncio.to_thread(_read_bootstrap, workspace, max_chars)
        self._cache[workspace] = (now, text)
        return text


def system_prompt(agent_prompt: str | None, bootstrap: str, extra: str | None) -> str:
    return "\n\n".join(p for p in (agent_prompt, bootstrap, extra) if p)
