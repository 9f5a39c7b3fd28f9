"""Commands for ``exec``: the allowlist check (parsed without a shell: no pipes, redirects,
chaining or substitutions; an allowed program; every path argument inside the workspace) and the
run itself, in a process group of its own that is killed whole on timeout or cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from openclaw.tools.base import ToolError

_OPERATOR_CHARS = frozenset(";&|<>()")
FULL_MODE_HINT = 'needs tools.exec.security "full"'


def allowlisted_argv(
    command: str, allow: Sequence[str], workspace: Path, cwd: Path, *, workspace_only: bool
) -> list[str]:
    """``command`` as an argv to run without a shell; ToolError saying why it may not run."""
    if "`" in command or "$(" in command or "${" in command or "\n" in command:
        raise ToolError(f"Command substitution and newlines are not allowed ({FULL_MODE_HINT}).")
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        argv = list(lexer)
    except ValueError as exc:
        raise ToolError(f"The command cannot be parsed: {exc}.") from None
    if not argv:
        raise ToolError("The command is empty.")
    for token in argv:
        if token and set(token) <= _OPERATOR_CHARS:
            raise ToolError(
                f"Pipes, redirects and chaining (`{token}`) are not allowed ({FULL_MODE_HINT})."
            )
    program = argv[0]
    if "/" in program or program not in allow:
        raise ToolError(
            f"`{program}` is not an allowed program; allowed: {', '.join(allow) or 'none'}."
        )
    operands_only = False
    previous = ""
    for arg in argv[1:]:
        if operands_only or not arg.startswith("-") or arg == "-":
            if program == "date" and previous not in DATE_VALUE_OPTIONS and arg[:1] != "+":
                # `date MMDDhhmm` sets the clock: date may only show the time.
                raise ToolError(f"`date {arg}` is not allowed: only `date [-d ...] [+FORMAT]`.")
            _check_path(arg, arg, workspace, cwd, workspace_only=workspace_only)
        elif arg == "--":
            operands_only = True  # what follows is file names, whatever they start with
        else:
            _check_option(program, arg, workspace, cwd, workspace_only=workspace_only)
        previous = arg
    return argv


# Options of the default allowlist's programs that change the host, or read beyond the command
# line's own paths (following the symlinks of a tree, or file names read from a file).
REFUSED_OPTIONS: dict[str, frozenset[str]] = {
    "date": frozenset({"-s", "--set"}),
    "grep": frozenset({"-R", "--dereference-recursive"}),
    "ls": frozenset({"-L", "--dereference"}),
    "wc": frozenset({"--files0-from"}),
}
# date's options whose value is the next argument (not an operand that would set the clock).
DATE_VALUE_OPTIONS = frozenset({"-d", "--date", "-f", "--file", "-r", "--reference"})


def _check_option(
    program: str, arg: str, workspace: Path, cwd: Path, *, workspace_only: bool
) -> None:
    """An option, and a file name glued to it (``--file=x``, ``-fx``): the value is checked
    like any path argument; options in ``REFUSED_OPTIONS`` are refused."""
    refused = REFUSED_OPTIONS.get(program, frozenset())
    if arg.startswith("--"):
        name, _, value = arg.partition("=")
        # GNU tools take any unambiguous start of a long option: ``--se`` is ``--set``.
        if any(r.startswith("--") and r.startswith(name) for r in refused):
            raise ToolError(f"`{program} {name}` is not allowed.")
        if value:
            _check_path(value, arg, workspace, cwd, workspace_only=workspace_only)
        return
    # A cluster of short options (``-rn``), maybe with a value glued on after any of them
    # (``-f/etc/x``, ``-rf../x``, ``-n5``): each possible value is checked as a path (the check
    # only refuses what leads out of the workspace).
    for ch in arg[1:]:
        if not ch.isalpha():
            break
        if f"-{ch}" in refused:
            raise ToolError(f"`{program} -{ch}` is not allowed.")
    for i in range(2, len(arg)):
        _check_path(arg[i:], arg, workspace, cwd, workspace_only=workspace_only)


def _check_path(value: str, arg: str, workspace: Path, cwd: Path, *, workspace_only: bool) -> None:
    """``value`` (from the argument ``arg``), when it names a path (it has a ``/``, is ``.`` or
    ``..``, or is an existing entry), must lead inside the workspace, symlinks followed.  No
    shell runs the command, so ``~`` and globs are plain characters."""
    if not workspace_only or not value:
        return
    candidate = cwd / value
    looks_like_path = "/" in value or value in (".", "..")
    if not (looks_like_path or candidate.exists() or candidate.is_symlink()):
        return
    if not candidate.resolve().is_relative_to(workspace.resolve()):
        raise ToolError(f"The argument `{arg}` names a path outside the agent's workspace.")


@dataclass(frozen=True, slots=True)
class Completed:
    exit_code: int | None  # None: killed at the timeout
    output: str
    truncated: bool
    duration_ms: int


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the command's own limit, enforced with its group kill
    max_chars: int,
    redact: Callable[[str], str] | None = None,
) -> Completed:
    """Run ``argv`` in a new process group, stdout and stderr together, output capped; the
    whole group is killed on timeout and when the caller is cancelled."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: one kill reaches its children too
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    kept = 0
    limit = max_chars * 4  # bytes enough for max_chars characters of any UTF-8 text
    truncated = False

    async def drain() -> None:
        nonlocal kept, truncated
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            if kept < limit:
                chunks.append(chunk[: limit - kept])
                kept += min(len(chunk), limit - kept)
            else:
                truncated = True  # keep reading: a full pipe would stall the command

    drainer = asyncio.create_task(drain())
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await _exited(proc)
    except TimeoutError:
        timed_out = True
    finally:
        # The command is over when its own process is: what it left running in the background
        # goes with the group (holding the pipe open, it would keep the call waiting).
        # (The group's id is the command's pid: this reaches the command itself too.  Not
        # ``proc.kill()``: Popen reaps an exited child there, stealing its exit code from
        # asyncio's watcher.)
        kill_group(proc.pid)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await proc.wait()
        await _reap_orphans(proc.pid)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await drainer
        drainer.cancel()
    exit_code = None if timed_out else proc.returncode
    text = b"".join(chunks).decode("utf-8", "replace")
    duration = int((time.perf_counter() - started) * 1000)
    if redact is not None:
        # Before the cut: a secret cut in half would no longer be recognised.
        text = redact(text)
    if len(text) > max_chars:
        text, truncated = text[:max_chars], True
    return Completed(exit_code, text, truncated, duration)


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until ``proc`` itself has exited.  ``proc.wait()`` also waits for its pipes to close,
    which a child left in the background keeps open; a pidfd says when the process is gone."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # gone and reaped already
        return
    except (AttributeError, OSError):  # not Linux 5.3+: the pipes' end will have to do
        await proc.wait()
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _reap_orphans(pgid: int) -> None:
    """Collect what is left of the group once its leader is reaped.  Killed background
    children are handed to PID 1 (or a subreaper): when that is this gateway (a container
    without an init), nobody else would collect them and zombies would pile up.  Otherwise
    there are none of our children in the group, and this returns at once."""
    for _ in range(100):
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG: never blocks
        except ChildProcessError:
            return  # none left
        if pid == 0:  # some still dying
            await asyncio.sleep(0.01)


def kill_group(pgid: int) -> None:
    """SIGKILL to the process group ``pgid`` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def which(program: str, env: Mapping[str, str]) -> str | None:
    return shutil.which(program, path=env.get("PATH"))
