"""What every command shares: the ``--config`` option, loading the config, failing cleanly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from openclaw import paths
from openclaw.config.loader import load_config
from openclaw.config.schema import Config
from openclaw.errors import ConfigError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $OPENCLAW_CONFIG_PATH or ~/.openclaw/openclaw.json).",
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` to stderr and exit (never a traceback)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load(config_path: Path | None) -> Config:
    """The validated config, or a clean exit naming what is wrong."""
    try:
        return load_config(paths.config_path(config_path))
    except ConfigError as exc:
        fail(str(exc))
