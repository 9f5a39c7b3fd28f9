"""The built-in tools, and the toolbox a runtime builds once: each agent's allowed tools (and
their definitions, as a model is shown them), and running a call: arguments checked, failures
turned into error results, secrets cut out of what comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openclaw.agents.registry import Agent, AgentRegistry
from openclaw.config import defaults as d
from openclaw.config.schema import Config
from openclaw.logs import get_logger
from openclaw.messages import ToolDefinition
from openclaw.providers.registry import ProviderRegistry
from openclaw.sessions.base import SessionStore
from openclaw.sessions.keys import Target
from openclaw.tools import policy
from openclaw.tools.base import Tool, ToolContext, ToolError, ToolResult
from openclaw.tools.builtin import (
    edit,
    ls,
    memory_get,
    memory_search,
    read,
    sessions_history,
    sessions_list,
    web_fetch,
    write,
)
from openclaw.tools.builtin import exec as exec_tool
from openclaw.tools.memory_index import Embed, MemoryIndexes
from openclaw.tools.redact import Redactor
from openclaw.tools.web import WebFetcher

log = get_logger("tools")

BUILTIN: tuple[Tool[Any], ...] = (
    read.TOOL,
    write.TOOL,
    edit.TOOL,
    ls.TOOL,
    exec_tool.TOOL,
    web_fetch.TOOL,
    memory_search.TOOL,
    memory_get.TOOL,
    sessions_list.TOOL,
    sessions_history.TOOL,
)


@dataclass(frozen=True)
class AgentTools:
    """The tools one agent may use, and their definitions (built once, sent every call)."""

    tools: Mapping[str, Tool[Any]]
    definitions: tuple[ToolDefinition, ...]

    @classmethod
    def of(cls, tools: Iterable[Tool[Any]]) -> AgentTools:
        chosen = {t.name: t for t in tools}
        return cls(chosen, tuple(t.definition() for t in chosen.values()))

    def __contains__(self, name: object) -> bool:
        return name in self.tools


@dataclass(frozen=True, slots=True)
class ToolRun:
    """A finished call: its result (already redacted) and how long it took."""

    result: ToolResult
    duration_ms: int


class Toolbox:
    def __init__(
        self,
        config: Config,
        agents: AgentRegistry,
        store: SessionStore,
        state_dir: Path,
        redactor: Redactor,
        providers: ProviderRegistry | None = None,
    ) -> None:
        self.config = config.tools
        self.providers = providers
        self.store = store
        self.redactor = redactor
        self.memory = MemoryIndexes(state_dir)
        self.web = WebFetcher(config.tools.web_fetch)
        available = [
            t for t in BUILTIN if not (t.name == "exec" and config.tools.exec.security == "deny")
        ]
        names = [t.name for t in available]
        self._agents = {
            agent.id: AgentTools.of(
                t
                for t in available
                if t.name in policy.allowed_names(names, self.config, agent.tools)
            )
            for agent in agents
        }
        gw = config.gateway.tools
        denied = policy.http_denied(names, gw.allow, gw.deny, d.HTTP_TOOLS_DENY)
        self._http = {
            agent_id: AgentTools.of(t for t in tools.tools.values() if t.name not in denied)
            for agent_id, tools in self._agents.items()
        }
        lists = [self.config.deny, self.config.allow or [], gw.allow, gw.deny]
        for agent in agents:
            if agent.tools is not None:
                lists += [agent.tools.allow or [], agent.tools.deny]
        unknown = policy.unknown_names(names, lists)
        if unknown:
            log.warning("tool policy names unknown tools", extra={"names": sorted(set(unknown))})

    def for_agent(self, agent_id: str) -> AgentTools:
        return self._agents[agent_id]

    def for_http(self, agent_id: str) -> AgentTools:
        """What ``POST /tools/invoke`` may run for the agent: its tools minus the HTTP deny list."""
        return self._http[agent_id]

    def context(self, agent: Agent, target: Target) -> ToolContext:
        embed = None
        if agent.embedding_model is not None and self.providers is not None:
            embed = self._embedder(self.providers, agent.embedding_model)
        return ToolContext(
            agent_id=agent.id,
            workspace=agent.workspace,
            session_key=target.key,
            namespace=target.namespace,
            config=self.config,
            store=self.store,
            redactor=self.redactor,
            memory=self.memory,
            web=self.web,
            embedding_model=agent.embedding_model,
            embed=embed,
        )

    @staticmethod
    def _embedder(providers: ProviderRegistry, ref: str) -> Embed:
        async def embed(texts: list[str]) -> list[list[float]]:
            return (await providers.embed(ref, texts)).vectors

        return embed

    async def run(
        self, tool: Tool[Any], arguments: str | Mapping[str, Any], ctx: ToolContext
    ) -> ToolRun:
        return await run_tool(tool, arguments, ctx)


async def run_tool(
    tool: Tool[Any], arguments: str | Mapping[str, Any], ctx: ToolContext
) -> ToolRun:
    """One call, whatever happens a result: a tool that fails (or raises) becomes an error
    result the model can recover from, and the gateway's secrets are cut out of it.
    Cancellation passes (the run is going away)."""
    started = time.perf_counter()
    try:
        result = await tool.run(tool.parse(arguments), ctx)
    except ToolError as exc:
        result = ToolResult(str(exc), is_error=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("tool failed", extra={"tool": tool.name})
        result = ToolResult(f"`{tool.name}` failed: {type(exc).__name__}: {exc}", is_error=True)
    duration = int((time.perf_counter() - started) * 1000)
    clean = ToolResult(ctx.redactor(result.text), result.is_error, result.details)
    return ToolRun(clean, duration)
