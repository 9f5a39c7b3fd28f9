"""``exec``: run a command in the workspace, under ``tools.exec.security``: ``allowlist`` (the
default: one allowed program, no shell, paths inside the workspace), ``full`` (``/bin/sh -c``) or
``deny``.  The environment is scrubbed of every gateway secret; output and time are bounded."""

from __future__ import annotations

from pydantic import Field

from openclaw.tools import shell, workspace
from openclaw.tools.base import Args, Tool, ToolContext, ToolError, ToolResult


class ExecArgs(Args):
    command: str = Field(min_length=1, description="The command to run.")
    workdir: str | None = Field(None, description="Folder to run it in, inside the workspace.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds before it is killed (at most the configured limit)."
    )


async def run(args: ExecArgs, ctx: ToolContext) -> ToolResult:
    cfg = ctx.config.exec
    if cfg.security == "deny":
        raise ToolError('Running commands is turned off (tools.exec.security is "deny").')
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    cwd = workspace.resolve(ctx.workspace, args.workdir or ".", workspace_only=True)
    if not cwd.is_dir():
        raise ToolError(f"`{args.workdir}` is not a folder of the workspace.")
    env = ctx.redactor.environment()
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if cfg.security == "full":
        argv = ["/bin/sh", "-c", args.command]
    else:
        argv = shell.allowlisted_argv(
            args.command,
            cfg.allow,
            ctx.workspace,
            cwd,
            workspace_only=ctx.config.fs.workspace_only,
        )
        program = shell.which(argv[0], env)
        if program is None:
            raise ToolError(f"`{argv[0]}` is not installed.")
        argv[0] = program
    timeout = min(args.timeout or cfg.timeout_seconds, cfg.timeout_seconds)
    done = await shell.run_command(
        argv,
        cwd=cwd,
        env=env,
        timeout=timeout,
        max_chars=cfg.max_output_chars,
        redact=ctx.redactor,
    )
    text = done.output
    if done.truncated:
        text += f"\n[output cut at {cfg.max_output_chars} characters]"
    if done.exit_code is None:
        status = f"killed after the timeout of {timeout:g} s"
    else:
        status = f"exit code {done.exit_code}"
    text += f"\n[{status}, {done.duration_ms} ms]"
    details = {
        "exitCode": done.exit_code,
        "durationMs": done.duration_ms,
        "cwd": workspace.shown(ctx.workspace, cwd),
    }
    return ToolResult(text, is_error=done.exit_code != 0, details=details)


TOOL = Tool(
    name="exec",
    group="runtime",
    description=(
        "Run a command in the agent's workspace and return its output and exit code. In the "
        "default allowlist mode: a single allowed program with arguments, no shell features "
        "(pipes, redirects, chaining), paths inside the workspace."
    ),
    args=ExecArgs,
    run=run,
    changes_host=True,
)
