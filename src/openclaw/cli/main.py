"""``openclaw``: gateway, setup, config (and the agent/sessions commands of the runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from openclaw import __version__, logs, paths
from openclaw.cli.common import config_option, fail, load
from openclaw.config.edit import effective, get_value, parse_value, set_in_file, write_config
from openclaw.config.loader import read_raw
from openclaw.config.schema import Config
from openclaw.errors import ConfigError
from openclaw.gateway.app import bind_host
from openclaw.gateway.auth import is_loopback_host, resolve_secret
from openclaw.paths import make_private_dir


def with_overrides(
    config: Config, *, port: int | None, bind: str | None, workers: str | None = None
) -> Config:
    """Apply command-line flags through the schema so they are validated like the file."""
    if port is None and bind is None and workers is None:
        return config
    data = config.model_dump(by_alias=True, exclude_none=True)
    if port is not None:
        data["gateway"]["port"] = port
    if bind is not None:
        data["gateway"]["bind"] = bind
    if workers is not None:
        data["gateway"]["workers"] = int(workers) if workers.isdigit() else workers
    from openclaw.config.loader import validate

    try:
        return validate(data, env={})
    except ConfigError as exc:
        fail(str(exc))


@click.group()
@click.version_option(__version__, prog_name="openclaw")
def cli() -> None:
    """OpenClaw Gateway: self-hosted agents behind an OpenAI-compatible API."""


@cli.group()
def gateway() -> None:
    """Run and inspect the gateway."""


@gateway.command("run")
@click.option("--port", type=int, default=None, help="Port (default 18789; 0 picks a free one).")
@click.option("--bind", default=None, help="loopback (default), lan, or an IP address.")
@click.option(
    "--workers",
    default=None,
    help="Processes serving the port (default gateway.workers, 1; auto: one per CPU).",
)
@config_option
def gateway_run(
    port: int | None, bind: str | None, workers: str | None, config_path: Path | None
) -> None:
    """Start the gateway in the foreground (Ctrl-C stops it cleanly)."""
    from openclaw.gateway.server import run

    logs.configure()
    config = with_overrides(load(config_path), port=port, bind=bind, workers=workers)
    try:
        run(config)
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@gateway.command("worker", hidden=True)
@click.option("--fd", type=int, required=True)
@click.option("--ready-fd", type=int, required=True)
@click.option("--index", type=int, required=True)
def gateway_worker(fd: int, ready_fd: int, index: int) -> None:
    """One of `gateway run --workers N`'s processes (started by it, config on stdin)."""
    from openclaw.gateway.server import run_loop
    from openclaw.gateway.workers import config_from_stdin, serve_worker

    logs.configure(worker=index)
    try:
        config = config_from_stdin()
        run_loop(serve_worker(config, fd=fd, ready_fd=ready_fd, index=index))
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@gateway.command("token")
@config_option
def gateway_token(config_path: Path | None) -> None:
    """Print the gateway secret clients must send as `Authorization: Bearer <secret>`."""
    config = load(config_path)
    try:
        resolved = resolve_secret(
            config.gateway.auth,
            state_dir=paths.state_dir(),
            loopback_only=is_loopback_host(bind_host(config.gateway.bind)),
            generate=False,
        )
    except ConfigError as exc:
        fail(str(exc))
    if not resolved.secret:
        fail(f"gateway.auth.mode is {resolved.mode}: there is no secret to send")
    click.echo(resolved.secret)


@cli.command()
@config_option
def setup(config_path: Path | None) -> None:
    """First run: write a starter config (the OpenAI endpoints on) and make sure a secret
    exists."""
    path = paths.config_path(config_path)
    state = paths.state_dir()
    make_private_dir(state)
    if path.exists():
        click.echo(f"config: {path} (exists, left as it is)")
    else:
        write_config(
            path,
            {
                "gateway": {
                    "port": 18789,
                    "bind": "loopback",
                    "auth": {"mode": "token"},
                    "http": {
                        "endpoints": {
                            "chatCompletions": {"enabled": True},
                            "responses": {"enabled": True},
                        }
                    },
                }
            },
        )
        click.echo(f"config: wrote {path} (chat completions and responses endpoints enabled)")
    config = load(config_path)
    try:
        resolved = resolve_secret(
            config.gateway.auth,
            state_dir=state,
            loopback_only=is_loopback_host(bind_host(config.gateway.bind)),
        )
    except ConfigError as exc:
        fail(str(exc))
    if not resolved.secret:
        click.echo(f"auth: {resolved.mode} mode (no secret)")
        return
    where = {
        "config": f"gateway.auth.{resolved.mode} in {path}",
        "env": f"the {resolved.mode} in your environment",
        "generated": f"{resolved.path} (mode 0600)",
    }[resolved.source]
    click.echo(f"auth: {resolved.mode} mode; the secret is in {where}")
    click.echo("      print it with: openclaw gateway token")


@cli.group("config")
def config_group() -> None:
    """Read, change and check the config file."""


def _print_value(value: Any) -> None:
    if isinstance(value, str):
        click.echo(value)
    else:
        click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@config_group.command("get")
@click.argument("path")
@config_option
def config_get(path: str, config_path: Path | None) -> None:
    """Print the value at PATH (e.g. gateway.port), defaults included."""
    try:
        _print_value(get_value(effective(load(config_path)), path))
    except ConfigError as exc:
        fail(str(exc))


@config_group.command("set")
@click.argument("path")
@click.argument("value")
@config_option
def config_set(path: str, value: str, config_path: Path | None) -> None:
    """Set PATH to VALUE (a JSON5 literal or a plain string); refuses an invalid result."""
    file = paths.config_path(config_path)
    try:
        set_in_file(file, path, parse_value(value))
    except ConfigError as exc:
        fail(f"not changed: {exc}")
    click.echo(f"{path} set in {file}")


@config_group.command("validate")
@config_option
def config_validate(config_path: Path | None) -> None:
    """Check the config file against the schema."""
    file = paths.config_path(config_path)
    load(config_path)
    click.echo(f"{file}: valid" if file.exists() else f"{file}: absent (all defaults)")


@config_group.command("path")
@config_option
def config_path_cmd(config_path: Path | None) -> None:
    """Print where the config file is."""
    click.echo(str(paths.config_path(config_path)))


def main() -> None:
    cli()


__all__ = ["cli", "main", "read_raw"]

from openclaw.cli.agent import agent_command  # noqa: E402
from openclaw.cli.db import db_group  # noqa: E402
from openclaw.cli.sessions import sessions_group  # noqa: E402

cli.add_command(agent_command)
cli.add_command(sessions_group)
cli.add_command(db_group)
