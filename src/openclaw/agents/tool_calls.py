"""Server tool calls inside a run.

Of the calls in one answer, those naming a client tool (the request's ``tools``) are the client's;
every other one is the gateway's: run here, an unknown or disallowed name answered with an error
result the model can recover from.  ``ServerCalls`` runs them (loop detection, results redacted);
``ClientCallFilter`` is the client's view of a streamed answer (server calls hidden, its own calls
numbered from 0, as if the server calls were not there).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from openclaw.agents.events import ToolFinished, ToolStarted
from openclaw.agents.outcome import ToolResultRecord
from openclaw.messages import ToolCall, ToolCallDelta
from openclaw.tools.base import ToolContext
from openclaw.tools.registry import AgentTools, Toolbox

SUMMARY_CHARS = 200


class ClientCallFilter:
    """Streamed tool-call pieces of one model call, as the client sees them."""

    def __init__(self, client_names: frozenset[str]) -> None:
        self._client_names = client_names
        self._index: dict[int, int | None] = {}  # model's index -> client's (None: server)

    def __call__(self, delta: ToolCallDelta) -> ToolCallDelta | None:
        if delta.index not in self._index:
            if delta.name is None:
                return None  # a call's first piece names it; without one it cannot be placed
            mine = delta.name in self._client_names
            count = sum(1 for v in self._index.values() if v is not None)
            self._index[delta.index] = count if mine else None
        index = self._index[delta.index]
        if index is None:
            return None
        return ToolCallDelta(index, delta.id, delta.name, delta.arguments)


def _canonical(arguments: str) -> str:
    try:
        return orjson.dumps(orjson.loads(arguments or "{}"), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return arguments


class ServerCalls:
    """The gateway's tool calls of one run."""

    def __init__(
        self, toolbox: Toolbox, tools: AgentTools, ctx: ToolContext, *, max_repeats: int
    ) -> None:
        self._toolbox = toolbox
        self._tools = tools
        self._ctx = ctx
        self._max_repeats = max_repeats
        self._seen: Counter[tuple[str, str]] = Counter()

    def started(self, call: ToolCall) -> ToolStarted:
        text = self._toolbox.redactor(call.arguments)
        args: Any
        try:
            args = orjson.loads(text or "{}")
        except orjson.JSONDecodeError:
            args = text
        return ToolStarted(call.id, call.name, args)

    @staticmethod
    def finished(result: ToolResultRecord) -> ToolFinished:
        return ToolFinished(
            result.call.id,
            result.call.name,
            result.is_error,
            result.duration_ms,
            result.text[:SUMMARY_CHARS],
        )

    async def run(self, call: ToolCall) -> ToolResultRecord:
        """One call, always a result: a repeat beyond the limit and an unknown or disallowed
        tool are answered with an error result instead of running."""
        key = (call.name, _canonical(call.arguments))
        self._seen[key] += 1
        if self._seen[key] > self._max_repeats:
            return ToolResultRecord(
                call,
                f"`{call.name}` was already called {self._max_repeats} times with these "
                "arguments in this run; not run again. Use the results you have, or change "
                "the arguments.",
                True,
                0,
            )
        tool = self._tools.tools.get(call.name)
        if tool is None:
            known = ", ".join(self._tools.tools) or "none"
            return ToolResultRecord(
                call, f"Tool `{call.name}` not found. Tools you can call: {known}.", True, 0
            )
        done = await self._toolbox.run(tool, call.arguments, self._ctx)
        return ToolResultRecord(call, done.result.text, done.result.is_error, done.duration_ms)
