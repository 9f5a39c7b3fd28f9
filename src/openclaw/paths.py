"""Where the config file and the state directory live."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$OPENCLAW_CONFIG_PATH``, else ``~/.openclaw/openclaw.json``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("OPENCLAW_CONFIG_PATH")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".openclaw" / "openclaw.json"


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``$OPENCLAW_STATE_DIR``, else ``~/.openclaw``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("OPENCLAW_STATE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".openclaw"


# Modes for what the gateway writes: conversations, secrets and config are the user's alone.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700 (each ``mkdir`` gets the mode, so there is
    no moment when one is wider; ``Path.mkdir(parents=True)`` gives parents the default mode)."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir(mode=PRIVATE_DIR)
    return path


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists, created 0600 if it did not (before a library such as SQLite
    creates it with the default mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
