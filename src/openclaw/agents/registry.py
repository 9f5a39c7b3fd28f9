"""The configured agents, resolved once at start-up: ids, default agent, model, workspace."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from openclaw.config import defaults as d
from openclaw.config.schema import AgentToolsConfig, CatalogEntry, Config, ModelRef
from openclaw.errors import InvalidRequestError, ModelNotFoundError
from openclaw.sessions.keys import Target, normalize_agent_id, resolve_target


class UnknownAgentError(ModelNotFoundError):
    """An agent id that is not configured; the message names the known ids."""


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    model: ModelRef
    workspace: Path
    system_prompt: str | None
    timeout_seconds: int
    bootstrap_max_chars: int
    max_history_messages: int
    max_history_tokens: int | None
    tools: AgentToolsConfig | None = None  # the agent's own narrowing of the tools
    # What ``x-openclaw-model`` may name for this agent: its own models and the catalog's, by
    # ``provider/model`` and by alias, each to its ``provider/model``.
    models: Mapping[str, str] = field(default_factory=dict)
    # The configured embedding model (``provider/model``), if any.
    embedding_model: str | None = None

    def pick_model(self, name: str) -> str:
        """The model a request asks for by ``name``; 400 naming the allowed ones otherwise."""
        ref = self.models.get(name.strip())
        if ref is None:
            allowed = ", ".join(f"`{n}`" for n in sorted(self.models))
            raise InvalidRequestError(
                f"The model `{name}` is not allowed for agent `{self.id}`; allowed: {allowed}.",
                param="x-openclaw-model",
                code="model_not_allowed",
            )
        return ref


def default_model(config: Config) -> ModelRef:
    """``agents.defaults.model``, else the first configured provider model, else the local one."""
    if config.agents.defaults.model is not None:
        return config.agents.defaults.model
    for name, provider in config.models.providers.items():
        if provider.models:
            return ModelRef(primary=f"{name}/{provider.models[0].id}")
    return ModelRef(primary=f"{d.LOCAL_PROVIDER}/{d.LOCAL_MODEL}")


def allowed_models(own: ModelRef, catalog: Mapping[str, CatalogEntry]) -> dict[str, str]:
    """Name -> ``provider/model`` of every model a request may pick for an agent."""
    out = {ref: ref for ref in (own.primary, *own.fallbacks)}
    for ref, entry in catalog.items():
        out[ref] = ref
        if entry.alias:
            out[entry.alias] = ref
    return out


class AgentRegistry:
    """Looks agents up by (normalised) id."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        defaults = config.agents.defaults
        model = default_model(config)
        entries = config.agents.entries
        agents: dict[str, Agent] = {}
        default_id = None
        for entry in entries:
            agent_id = normalize_agent_id(entry.id)
            if entry.default and default_id is None:
                default_id = agent_id
            agents[agent_id] = Agent(
                id=agent_id,
                name=entry.name or agent_id,
                model=entry.model or model,
                models=allowed_models(entry.model or model, {**defaults.models, **entry.models}),
                embedding_model=(entry.embeddings or defaults.embeddings).model,
                workspace=Path(entry.workspace).expanduser() if entry.workspace else Path(),
                system_prompt=entry.system_prompt or defaults.system_prompt,
                timeout_seconds=defaults.timeout_seconds,
                bootstrap_max_chars=defaults.bootstrap_max_chars,
                max_history_messages=defaults.max_history_messages,
                max_history_tokens=defaults.max_history_tokens,
                tools=entry.tools,
            )
        if not agents:
            agents[d.DEFAULT_AGENT_ID] = Agent(
                id=d.DEFAULT_AGENT_ID,
                name=d.DEFAULT_AGENT_ID,
                model=model,
                workspace=Path(),
                system_prompt=defaults.system_prompt,
                timeout_seconds=defaults.timeout_seconds,
                bootstrap_max_chars=defaults.bootstrap_max_chars,
                max_history_messages=defaults.max_history_messages,
                max_history_tokens=defaults.max_history_tokens,
                models=allowed_models(model, defaults.models),
                embedding_model=defaults.embeddings.model,
            )
        self.default_id: str = default_id or next(iter(agents))
        # Workspaces: explicit, else <state>/workspace for the default agent (or
        # agents.defaults.workspace), <state>/workspace-<id> for the others.
        base = Path(defaults.workspace).expanduser() if defaults.workspace else None
        for agent_id, agent in list(agents.items()):
            if agent.workspace != Path():
                continue
            if agent_id == self.default_id:
                ws = base or state_dir / "workspace"
            else:
                ws = (
                    (base.parent / f"{base.name}-{agent_id}")
                    if base
                    else state_dir / f"workspace-{agent_id}"
                )
            agents[agent_id] = _with_workspace(agent, ws)
        self._agents = agents

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._agents)

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def get(self, agent_id: str | None) -> Agent:
        """The agent for ``agent_id`` (normalised); ``None`` means the default agent."""
        if agent_id is None:
            return self._agents[self.default_id]
        try:
            key = normalize_agent_id(agent_id)
        except ValueError:
            key = ""
        agent = self._agents.get(key)
        if agent is None:
            raise UnknownAgentError(
                f"Unknown agent `{agent_id}`. Known agents: {', '.join(self._agents)}.",
                param="model",
            )
        return agent

    def target(
        self,
        agent_id: str | None,
        *,
        session_key: str | None = None,
        user: str | None = None,
        default: Literal["ephemeral", "main"],
        api: str = "openai",
        namespace: str | None = None,
    ) -> Target:
        """Where a run goes (``sessions.keys.resolve_target``, the rule every door shares),
        with both agents checked: the one asked for (None: the default agent) and the one a
        session key names, which then runs.  404 for an unknown agent; ValueError for a session
        key that cannot be one (each door says why in its own terms)."""
        agent = self.get(agent_id)
        target = resolve_target(
            agent.id,
            session_key=session_key,
            user=user,
            default=default,
            api=api,
            namespace=namespace,
        )
        if target.agent_id != agent.id:
            self.get(target.agent_id)
        return target

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._agents


def _with_workspace(agent: Agent, workspace: Path) -> Agent:
    from dataclasses import replace

    return replace(agent, workspace=workspace)
