"""What a server-side tool is: a name, a description, its parameters as a pydantic model (which
gives both the JSON Schema the model is shown and the validation of what it sends), a group for
the policy, and an async ``run``.

A tool's failure is a result the model can recover from (``ToolResult(is_error=True)``), never a
run's failure: tools raise ``ToolError`` with a message meant for the model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from openclaw.messages import ToolDefinition

if TYPE_CHECKING:
    from openclaw.config.schema import ToolsConfig
    from openclaw.sessions.base import SessionStore
    from openclaw.tools.memory_index import Embed, MemoryIndexes
    from openclaw.tools.redact import Redactor
    from openclaw.tools.web import WebFetcher


class ToolError(Exception):
    """A tool could not do what was asked; the message is for the model (no secrets, no
    tracebacks)."""


class Args(BaseModel):
    """Base of a tool's parameters: extra keys are refused, so a typo is an error the model sees
    rather than a silently ignored argument."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


A = TypeVar("A", bound=Args)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What goes back to the model as the tool message's text, and to the transcript."""

    text: str
    is_error: bool = False
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may use: the agent's workspace and identity, the tools' config, the session
    store (read-only use), and the shared helpers."""

    agent_id: str
    workspace: Path
    session_key: str
    config: ToolsConfig
    store: SessionStore
    redactor: Redactor
    memory: MemoryIndexes
    web: WebFetcher
    # The caller's own space of sessions (``sessions.keys.namespace_of``), if it has one.
    namespace: str | None = None
    # The agent's embedding model and how to use it (memory search turns hybrid); None: none.
    embedding_model: str | None = None
    embed: Embed | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool(Generic[A]):
    """One tool.  ``run`` takes the validated arguments and the context."""

    name: str
    group: str
    description: str
    args: type[A]
    run: Callable[[A, ToolContext], Awaitable[ToolResult]]
    # True for tools that change the host (files, processes): kept off POST /tools/invoke by
    # default.
    changes_host: bool = False

    MAX_SCHEMA_DEPTH: ClassVar[int] = 8

    def definition(self) -> ToolDefinition:
        """The tool as a model is shown it."""
        schema = self.args.model_json_schema(by_alias=True)
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolDefinition(self.name, self.description, schema)

    def parse(self, arguments: str | Mapping[str, Any]) -> A:
        """The model's arguments (JSON text, or an object) as this tool's ``Args``; ToolError
        naming what is wrong otherwise."""
        try:
            data = orjson.loads(arguments or "{}") if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise ToolError(f"Arguments for `{self.name}` are not valid JSON.") from None
        if not isinstance(data, Mapping):
            raise ToolError(f"Arguments for `{self.name}` must be a JSON object.")
        try:
            return self.args.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"`{'.'.join(str(p) for p in e['loc']) or 'arguments'}`: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise ToolError(f"Invalid arguments for `{self.name}`: {problems}.") from None
