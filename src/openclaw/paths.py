"""Where the config file and the state directory live."""

from __future__ import annotations

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
