"""``openclaw agent``: one turn with an agent, through the running gateway (WebSocket) or
in-process (``--local``); both run the same runner on the same session store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from openclaw import __version__, paths
from openclaw.agents.events import ToolFinished, ToolStarted, tool_data
from openclaw.agents.runner import RunParams
from openclaw.cli.common import config_option, fail, load
from openclaw.config.schema import Config
from openclaw.errors import ConfigError, OpenClawError
from openclaw.gateway.app import bind_host
from openclaw.gateway.auth import is_loopback_host, resolve_secret, secret_file
from openclaw.gateway.protocol import result_payload
from openclaw.messages import ChatMessage, TextDelta
from openclaw.runtime import Runtime

OPEN_TIMEOUT_SECONDS = 10.0
# The final response carries the whole reply; a long one must not trip the 1 MiB default.
MAX_FRAME_BYTES = 64 * 1024 * 1024
EXIT_INTERRUPTED = 130
TOOL_ARGS_SHOWN = 80


class AgentCommandError(Exception):
    """A failure shown to the user as one line, without a traceback."""


@dataclass(frozen=True, slots=True)
class Turn:
    """What to send: the message and where it goes."""

    message: str
    agent_id: str | None
    session_key: str | None


@dataclass(frozen=True, slots=True)
class Remote:
    """Where the gateway is and the secret to show it (None: none could be found)."""

    url: str
    mode: str
    secret: str | None
    secret_problem: str | None = None


class Output:
    """Streams deltas to stdout as they come, or prints one JSON object at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._open_line = False
        self._after_tool = False
        self._args: dict[str, Any] = {}

    def delta(self, text: str) -> None:
        if self.as_json or not text:
            return
        if self._after_tool:
            # The tool lines already separate the rounds' texts: no blank lines after them.
            text = text.lstrip("\n")
            if not text:
                return
            self._after_tool = False
        click.echo(text, nl=False)  # click.echo flushes, so the text shows as it arrives
        self._open_line = True

    def tool(self, data: dict[str, Any]) -> None:
        """One line per tool call, when it ends: its name, arguments, outcome, duration."""
        if self.as_json:
            return
        if data.get("phase") == "start":
            self._args[str(data.get("toolCallId"))] = data.get("args")
            return
        args = orjson.dumps(self._args.pop(str(data.get("toolCallId")), None)).decode()
        if len(args) > TOOL_ARGS_SHOWN:
            args = args[: TOOL_ARGS_SHOWN - 3] + "..."
        outcome = "error" if data.get("isError") else "ok"
        self.interrupt()
        click.echo(f"[tool {data.get('name')} {args}: {outcome}, {data.get('durationMs')} ms]")
        self._after_tool = True

    def finish(self, result: dict[str, Any]) -> None:
        if self.as_json:
            keys = ("runId", "sessionKey", "text", "usage")
            click.echo(orjson.dumps({k: result[k] for k in keys}).decode())
        else:
            click.echo()
        self._open_line = False

    def interrupt(self) -> None:
        """End a half-printed reply so an error message starts on its own line."""
        if self._open_line:
            click.echo()
            self._open_line = False


def gateway_url(config: Config) -> str:
    """``ws://<host>:<port>/`` of the local gateway (a wildcard bind is reached on loopback)."""
    host = bind_host(config.gateway.bind)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{config.gateway.port}/"


def find_remote(config: Config, url: str | None, token: str | None) -> Remote:
    """The gateway's URL and secret: flags first, else what ``openclaw gateway token`` prints."""
    target = url or gateway_url(config)
    if token is not None:
        return Remote(target, "token", token)
    auth = config.gateway.auth
    try:
        resolved = resolve_secret(
            auth,
            state_dir=paths.state_dir(),
            loopback_only=is_loopback_host(bind_host(config.gateway.bind)),
            generate=False,
        )
    except ConfigError as exc:
        # Not fatal yet: a gateway that is not running is the more useful thing to report.
        return Remote(target, auth.mode, None, str(exc))
    return Remote(target, resolved.mode, resolved.secret)


# --- over the gateway --------------------------------------------------------------------------


async def run_remote(remote: Remote, turn: Turn, out: Output) -> dict[str, Any]:
    """Connect, authenticate, send ``agent`` and stream its events; the final result."""
    try:
        ws = await connect(
            remote.url,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            max_size=MAX_FRAME_BYTES,
            user_agent_header=f"openclaw-cli/{__version__}",
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise AgentCommandError(
            f"cannot reach the gateway at {remote.url} ({_reason(exc)}); "
            "start it with `openclaw gateway run` or use --local"
        ) from None
    try:
        await _authenticate(ws, remote)
        return await _agent_call(ws, turn, out)
    except TimeoutError:
        raise AgentCommandError(
            f"the gateway at {remote.url} did not answer the connect request in time"
        ) from None
    except ConnectionClosed as exc:
        raise AgentCommandError(
            f"the gateway at {remote.url} closed the connection ({_close_reason(exc)})"
        ) from None
    finally:
        await ws.close()


async def _send(ws: ClientConnection, frame_id: str, method: str, params: dict[str, Any]) -> None:
    frame = {"type": "req", "id": frame_id, "method": method, "params": params}
    await ws.send(orjson.dumps(frame).decode())


async def _receive(ws: ClientConnection) -> dict[str, Any]:
    data = await ws.recv()
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        frame = None
    if not isinstance(frame, dict):
        raise AgentCommandError("the gateway sent a frame that is not a JSON object")
    return frame


async def _authenticate(ws: ClientConnection, remote: Remote) -> None:
    auth = {} if not remote.secret else {remote.mode: remote.secret}
    client = {"name": "openclaw-cli", "version": __version__}
    await _send(ws, "connect", "connect", {"auth": auth, "client": client})
    async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
        while True:
            frame = await _receive(ws)
            if frame.get("type") == "res" and frame.get("id") == "connect":
                break
    if frame.get("ok") is True:
        return
    error = _error_of(frame)
    if error.get("code") == "invalid_api_key":
        if remote.secret is None:
            raise AgentCommandError(
                f"the gateway at {remote.url} needs a {remote.mode} and none was found "
                f"({remote.secret_problem}); pass --token"
            )
        raise AgentCommandError(
            f"the gateway at {remote.url} rejected the {remote.mode}; check "
            "`openclaw gateway token` (with the gateway's config) or pass --token"
        )
    raise AgentCommandError(f"the gateway refused the connection: {error.get('message')}")


async def _agent_call(ws: ClientConnection, turn: Turn, out: Output) -> dict[str, Any]:
    params: dict[str, Any] = {"message": turn.message}
    if turn.agent_id is not None:
        params["agentId"] = turn.agent_id
    if turn.session_key is not None:
        params["sessionKey"] = turn.session_key
    await _send(ws, "agent", "agent", params)
    while True:
        frame = await _receive(ws)
        kind = frame.get("type")
        if kind == "event" and frame.get("event") == "agent":
            payload = frame.get("payload")
            data = payload.get("data") if isinstance(payload, dict) else None
            if not isinstance(payload, dict) or not isinstance(data, dict):
                continue
            if payload.get("stream") == "assistant" and isinstance(data.get("delta"), str):
                out.delta(data["delta"])
            elif payload.get("stream") == "tool":
                out.tool(data)
        elif kind == "res" and frame.get("id") == "agent":
            payload = frame.get("payload")
            if frame.get("ok") is True and isinstance(payload, dict):
                return payload
            raise AgentCommandError(str(_error_of(frame).get("message") or "the run failed"))


def _error_of(frame: dict[str, Any]) -> dict[str, Any]:
    error = frame.get("error")
    return error if isinstance(error, dict) else {}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _close_reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "no close frame"
    return f"{frame.code}: {frame.reason}" if frame.reason else str(frame.code)


# --- in-process --------------------------------------------------------------------------------


async def run_local(config: Config, state_dir: Path, turn: Turn, out: Output) -> dict[str, Any]:
    """The same run in this process, on the same state dir; the final result."""
    # A secret the gateway generated lives in the state dir: this run's tools must mask it too.
    generated = [
        path.read_text().strip()
        for path in (secret_file(state_dir, "token"), secret_file(state_dir, "password"))
        if path.is_file()
    ]
    try:
        runtime = Runtime(config, state_dir, secrets=generated)
    except ConfigError as exc:
        raise AgentCommandError(str(exc)) from None
    await runtime.start()
    try:
        try:
            target = runtime.agents.target(
                turn.agent_id, session_key=turn.session_key, default="main"
            )
        except ValueError:
            raise AgentCommandError(f"invalid session key {turn.session_key!r}") from None
        run = RunParams(message=ChatMessage(role="user", content=turn.message), target=target)

        # The run's events are shown as it emits them (as the gateway's doors do).
        async def emit(item: object) -> None:
            if isinstance(item, TextDelta):
                out.delta(item.text)
            elif isinstance(item, ToolStarted | ToolFinished):
                out.tool(tool_data(item))

        return result_payload(await runtime.runner.execute(run, emit))
    except OpenClawError as exc:
        raise AgentCommandError(exc.message) from None
    except ConfigError as exc:
        raise AgentCommandError(str(exc)) from None
    finally:
        # Waits for the transcript write, so the turn is stored when the command returns.
        await runtime.close()


# --- the command -------------------------------------------------------------------------------


@click.command("agent")
@click.option("--message", "-m", required=True, help="What to say to the agent.")
@click.option("--agent", "agent_id", default=None, help="Agent id (default: the default agent).")
@click.option(
    "--session-key",
    default=None,
    help="Session to talk in (default: the agent's main session, agent:<id>:main).",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the result, as JSON.")
@click.option("--local", is_flag=True, help="Run in this process instead of via the gateway.")
@click.option("--url", default=None, help="Gateway WebSocket URL (default: from the config).")
@click.option("--token", default=None, help="Gateway secret (default: as `gateway token`).")
@config_option
def agent_command(
    message: str,
    agent_id: str | None,
    session_key: str | None,
    as_json: bool,
    local: bool,
    url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Send one message to an agent and print its reply as it streams."""
    if not message.strip():
        fail("--message must not be empty", 2)
    if local and (url is not None or token is not None):
        fail("--url and --token talk to a gateway; they cannot be used with --local", 2)
    config = load(config_path)
    turn = Turn(message, agent_id, session_key)
    out = Output(as_json)
    try:
        if local:
            result = asyncio.run(run_local(config, paths.state_dir(), turn, out))
        else:
            remote = find_remote(config, url, token)
            result = asyncio.run(run_remote(remote, turn, out))
    except AgentCommandError as exc:
        out.interrupt()
        fail(str(exc))
    except KeyboardInterrupt:
        out.interrupt()
        fail("interrupted", EXIT_INTERRUPTED)
    out.finish(result)
