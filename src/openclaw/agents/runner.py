"""The one agent run every door shares (HTTP, WebSocket, CLI):

resolve agent -> resolve session (bounded history from the transcript) -> build messages ->
provider call, streaming -> events on the bus -> append the turn to the transcript -> result.

Runs on one session are serialised in arrival order; runs on different sessions run in parallel.
A cancelled run closes its upstream call at once and stores the partial reply marked aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openclaw.agents.events import AgentEvent, EventBus, Stream
from openclaw.agents.history import (
    Reconciled,
    apply_budget,
    reconcile,
    record_content,
    reset_record,
    to_messages,
)
from openclaw.agents.prompts import BootstrapCache, system_prompt
from openclaw.agents.registry import Agent, AgentRegistry
from openclaw.errors import (
    GatewayBusyError,
    InternalError,
    InvalidRequestError,
    OpenClawError,
    StoreUnavailableError,
    UnsupportedError,
    UpstreamTimeoutError,
)
from openclaw.ids import hex_id
from openclaw.logs import get_logger
from openclaw.providers.base import (
    ChatMessage,
    Finished,
    ModelRequest,
    ProviderEvent,
    SamplingParams,
    StopReason,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from openclaw.providers.registry import ProviderRegistry
from openclaw.sessions.keys import ephemeral_key, parse_key
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.store import SessionStore, Turn

log = get_logger("runner")

# Records read per run beyond the message budget, to see a history-reset marker in the tail.
HISTORY_SLACK = 8
# Writes of aborted and failed runs trail them (nobody waits for their answer), but only this
# far: beyond it new runs wait for the disk, so a burst cannot grow memory without bound.
MAX_PENDING_WRITES = 4096


def new_run_id() -> str:
    return hex_id(12)


@dataclass(frozen=True, slots=True)
class RunParams:
    """One run's input.  ``history`` is what the client sent before this turn, for doors whose
    clients carry the conversation (OpenAI clients resend all of it); None for doors whose
    clients do not (the WebSocket, the CLI), where the transcript alone is the history.
    ``session_key`` None means a new ephemeral session."""

    message: ChatMessage
    agent_id: str | None = None
    session_key: str | None = None
    history: Sequence[ChatMessage] | None = None
    extra_system_prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    run_id: str = field(default_factory=new_run_id)
    # A caller that must name the per-request session before the run (to echo it) makes it.
    ephemeral_key: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    # Earlier parts of this turn (the other results of parallel tool calls), before ``message``.
    preceding: tuple[ChatMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    session_key: str
    agent_id: str
    text: str
    usage: Usage
    stop_reason: StopReason
    model: str
    tool_calls: tuple[ToolCall, ...] = ()


class _SessionLocks:
    """One FIFO lock per busy session key; idle keys hold no memory."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def busy(self) -> set[str]:
        return set(self._locks)


class _Admission:
    """At most ``limit`` runs at once and ``queue`` waiting; beyond that the gateway is busy."""

    def __init__(self, limit: int, queue: int) -> None:
        self._sem = asyncio.Semaphore(limit)
        self._queue = queue
        self._waiting = 0

    async def acquire(self) -> None:
        if self._sem.locked() and self._waiting >= self._queue:
            raise GatewayBusyError("The gateway is busy; try again shortly.")
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._sem.release()


class AgentRunner:
    def __init__(
        self,
        agents: AgentRegistry,
        store: SessionStore,
        providers: ProviderRegistry,
        bus: EventBus,
        *,
        max_concurrent: int,
        max_queued: int,
    ) -> None:
        self.agents = agents
        self.store = store
        self.providers = providers
        self.bus = bus
        self._locks = _SessionLocks()
        self._admission = _Admission(max_concurrent, max_queued)
        self._bootstrap = BootstrapCache()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._writes: set[asyncio.Future[None]] = set()
        self._write_room = asyncio.Event()
        self._pending: dict[str, asyncio.Future[None]] = {}

    def sessions_in_use(self) -> set[str]:
        return self._locks.busy()

    def resolve(self, params: RunParams) -> tuple[Agent, str, bool]:
        """(agent, session key, ephemeral): the agent named in a session key wins."""
        if params.session_key is not None:
            parsed = parse_key(params.session_key)
            if parsed is None:
                raise InvalidRequestError(
                    f"Invalid session key `{params.session_key}`.", param="x-openclaw-session-key"
                )
            return self.agents.get(parsed.agent_id), params.session_key, False
        agent = self.agents.get(params.agent_id)
        return agent, params.ephemeral_key or ephemeral_key(agent.id), True

    async def run(self, params: RunParams) -> RunResult:
        """The whole run, without deltas (cheaper for backends that can skip streaming)."""
        agent, key, ephemeral = self.resolve(params)
        result = None
        async with self._slot(key, ephemeral):
            events = self._run_locked(params, agent, key, ephemeral, False)
            async with contextlib.aclosing(events):
                async for item in events:
                    if isinstance(item, RunResult):
                        result = item
        assert result is not None
        return result

    async def stream(
        self, params: RunParams, *, deltas: bool = True
    ) -> AsyncGenerator[TextDelta | ToolCallDelta | RunResult, None]:
        """Text deltas as they come, then the ``RunResult``."""
        agent, key, ephemeral = self.resolve(params)
        async with self._slot(key, ephemeral):
            events = self._run_locked(params, agent, key, ephemeral, deltas)
            async with contextlib.aclosing(events):
                async for item in events:
                    yield item

    async def wait_idle(self) -> None:
        """Until no run is in progress (shutdown lets runs on any door finish)."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def _slot(self, key: str, ephemeral: bool) -> AsyncIterator[None]:
        """Everything a run waits for before it starts, entered once per run (not per event):
        room in the write backlog, then the session's turn, then a run slot."""
        self._active += 1
        self._idle.clear()
        try:
            while len(self._writes) >= MAX_PENDING_WRITES:
                self._write_room.clear()
                await self._write_room.wait()
            if ephemeral:
                # A per-request key is new and unique: nothing to serialise against.
                await self._admission.acquire()
                try:
                    yield
                finally:
                    self._admission.release()
            else:
                # The session lock comes first: runs queued behind a busy session must not
                # hold run slots that other sessions could use.
                async with self._locks.hold(key):
                    await self._admission.acquire()
                    try:
                        yield
                    finally:
                        self._admission.release()
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _run_locked(
        self, params: RunParams, agent: Agent, key: str, ephemeral: bool, deltas: bool
    ) -> AsyncGenerator[TextDelta | ToolCallDelta | RunResult, None]:
        run_id = params.run_id
        started = time.time()
        stored: list[ChatMessage] = []
        if not ephemeral:
            # The previous turn of this session (an aborted or failed one) may still be being
            # written; its failure is not this run's.
            await self.settled(key)
            _, records = await self.store.load(
                key, agent.id, max_records=agent.max_history_messages + HISTORY_SLACK
            )
            stored = to_messages(records)
        if params.history is None:
            merged = Reconciled(stored, False)
        else:
            merged = reconcile(stored, list(params.history), (*params.preceding, params.message))
        history = apply_budget(
            merged.history,
            max_messages=agent.max_history_messages,
            max_tokens=agent.max_history_tokens,
        )
        bootstrap = self._bootstrap.fresh(agent.workspace)
        if bootstrap is None:
            bootstrap = await self._bootstrap.get(agent.workspace, agent.bootstrap_max_chars)
        system = system_prompt(agent.system_prompt, bootstrap, params.extra_system_prompt)
        messages: list[ChatMessage] = []
        if system:
            messages.append(ChatMessage(role="system", content=system))
        messages.extend(history)
        messages.extend(params.preceding)
        messages.append(params.message)
        refs = [agent.model.primary, *agent.model.fallbacks]
        if params.message.has_images or params.tools:
            provider, model, _ = self.providers.resolve(refs[0])
            if params.message.has_images and not provider.supports_images(model):
                raise UnsupportedError(
                    f"The model `{refs[0]}` of agent `{agent.id}` cannot take images.",
                    param="messages",
                )
            if params.tools and not provider.supports_tools(model):
                raise UnsupportedError(
                    f"The model `{refs[0]}` of agent `{agent.id}` cannot call client tools.",
                    param="tools",
                )

        self._emit(run_id, key, "lifecycle", {"phase": "start", "agentId": agent.id})
        request = ModelRequest(
            model="",
            messages=messages,
            sampling=params.sampling,
            tools=params.tools,
            tool_choice=params.tool_choice,
        )
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        parts: list[str] = []
        usage: Usage | None = None
        stop: StopReason = "stop"
        used_ref = refs[0]
        outcome = "aborted"
        error: OpenClawError | None = None
        deadline = asyncio.get_running_loop().time() + agent.timeout_seconds

        def turn_of(
            text: str,
            tool_calls: tuple[ToolCall, ...],
            stop: StopReason,
            error: OpenClawError | None,
        ) -> Turn:
            return self._turn(
                key, agent, ephemeral, params, merged.diverged, history, text, tool_calls,
                usage, stop, used_ref, run_id, started, error,
            )  # fmt: skip

        try:
            async with contextlib.aclosing(
                self.providers.stream(refs, request, deltas=deltas)
            ) as events:

                def take(event: ProviderEvent) -> None:
                    nonlocal usage, stop
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                        self._emit(run_id, key, "assistant", {"delta": event.text})
                    elif isinstance(event, ToolCallDelta):
                        call = calls.setdefault(event.index, ["", "", ""])
                        call[0] = event.id or call[0]
                        call[1] = event.name or call[1]
                        call[2] += event.arguments
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, Finished):
                        stop = event.stop_reason

                if not deltas:
                    # Nothing is handed out mid-run: one deadline covers the whole call.
                    async with asyncio.timeout_at(deadline):
                        async for used_ref, event in events:  # noqa: B007 - read after
                            take(event)
                while deltas:
                    # The deadline guards each wait on the model, never the consumer's own
                    # awaits between deltas (a timeout there would cancel the wrong thing).
                    try:
                        async with asyncio.timeout_at(deadline):
                            used_ref, event = await anext(events)
                    except StopAsyncIteration:
                        break
                    take(event)
                    if isinstance(event, TextDelta | ToolCallDelta):
                        yield event
            text = "".join(parts)
            if usage is None:
                provider, model, _ = self.providers.resolve(used_ref)
                usage = await provider.count_tokens(model, messages, text)
            outcome = "done"
        except TimeoutError:
            outcome = "error"
            error = UpstreamTimeoutError(
                f"The run exceeded the agent's timeout of {agent.timeout_seconds} s."
            )
            raise error from None
        except OpenClawError as exc:
            outcome, error = "error", exc
            raise
        except Exception as exc:
            # A bug or an upstream oddity, not the client leaving: recorded as an error.
            outcome, error = "error", InternalError()
            log.exception("run failed", extra={"run_id": run_id})
            raise error from exc
        finally:
            if outcome != "done":
                # Nobody waits for a failed or abandoned run's answer: its turn is stored in the
                # background, and the next run on the key waits for it (``_pending``).
                turn = turn_of(
                    "".join(parts),
                    _tool_calls(calls),
                    "aborted" if outcome == "aborted" else "error",
                    error,
                )
                with contextlib.suppress(Exception):  # logged by _queue
                    self._queue(turn)
                self._ended(run_id, key, outcome, error, usage)
        text = "".join(parts)
        tool_calls = _tool_calls(calls)
        assert usage is not None
        turn = turn_of(text, tool_calls, stop, None)
        # Durable before answered: the result (and with it the reply's final bytes on every
        # door) goes out only once the turn is committed, so a client that was answered never
        # finds the turn missing after a crash.  Deltas have already gone out as they came.
        try:
            await self._commit(turn)
        except OpenClawError as exc:
            outcome = "error"
            self._ended(run_id, key, "error", exc, usage)
            raise
        finally:
            # Also when the client left during the wait: the model had finished, and the
            # turn is kept as done (the write goes on, shielded).
            if outcome == "done":
                self._ended(run_id, key, "done", None, usage)
        yield RunResult(run_id, key, agent.id, text, usage, stop, used_ref, tool_calls)

    def _emit(self, run_id: str, key: str, stream: Stream, data: Mapping[str, object]) -> None:
        if self.bus.has_listeners(run_id):
            self.bus.publish(AgentEvent(run_id, stream, dict(data), key))

    def _ended(
        self, run_id: str, key: str, outcome: str, error: OpenClawError | None, usage: Usage | None
    ) -> None:
        if usage is not None:
            self._emit(run_id, key, "usage", usage.as_dict())
        data: dict[str, object] = {"phase": _PHASES[outcome]}
        if error is not None:
            data["error"] = error.message
        self._emit(run_id, key, "lifecycle", data)

    def _turn(
        self,
        key: str,
        agent: Agent,
        ephemeral: bool,
        params: RunParams,
        diverged: bool,
        history: list[ChatMessage],
        text: str,
        tool_calls: tuple[ToolCall, ...],
        usage: Usage | None,
        stop: StopReason,
        ref: str,
        run_id: str,
        started: float,
        error: OpenClawError | None,
    ) -> Turn:
        """The run's transcript write: a history reset if the client's history diverged, the
        turn's input messages, the assistant's reply."""
        records: list[TranscriptRecord] = []
        if diverged:
            records.append(reset_record(history, started, run_id))
        for part in (*params.preceding, params.message):
            records.append(
                TranscriptRecord(
                    role=part.role,
                    content=record_content(part),
                    timestamp=started,
                    run_id=run_id,
                    meta={"toolCallId": part.tool_call_id} if part.tool_call_id else None,
                )
            )
        meta: dict[str, object] = {}
        if tool_calls:
            meta["toolCalls"] = [call.as_dict() for call in tool_calls]
        if usage is not None and usage.estimated:
            meta["usageEstimated"] = True
        if error is not None:
            meta["error"] = {"type": error.error_type, "code": error.code, "message": error.message}
        records.append(
            TranscriptRecord(
                role="assistant",
                content=text,
                timestamp=time.time(),
                run_id=run_id,
                usage=None if usage is None else usage.as_dict(),
                stop_reason=stop,
                model=ref,
                meta=meta or None,
            )
        )
        return Turn(
            key=key,
            agent_id=agent.id,
            ephemeral=ephemeral,
            records=tuple(records),
            model=ref,
            usage=None if usage is None else (usage.prompt_tokens, usage.completion_tokens),
        )

    def _queue(self, turn: Turn) -> asyncio.Future[None]:
        """Hand ``turn`` to the store.  The next run on the key waits for the write before
        reading history (``_pending``), readers can wait for it (``settled``), and shutdown
        waits for all writes (``drain``)."""
        try:
            written = self.store.record_turn(turn)
        except Exception:
            log.exception("failed to store a transcript turn", extra={"session": turn.key})
            raise
        self._writes.add(written)
        written.add_done_callback(lambda f: self._written(turn.key, f))
        if not turn.ephemeral:
            self._pending[turn.key] = written
        return written

    async def _commit(self, turn: Turn) -> None:
        """Queue ``turn`` and wait until it is committed.  Cancelling the wait leaves the write
        going (the turn was answered by the model; it is kept)."""
        try:
            written = self._queue(turn)
        except Exception as exc:  # the store is closed (shutdown): the turn cannot be kept
            raise StoreUnavailableError() from exc
        try:
            await asyncio.shield(written)
        except StoreUnavailableError:
            raise
        except Exception as exc:  # not an I/O failure: a bug, logged by _written
            raise InternalError() from exc

    def _written(self, key: str, written: asyncio.Future[None]) -> None:
        self._writes.discard(written)
        if len(self._writes) < MAX_PENDING_WRITES:
            self._write_room.set()
        if self._pending.get(key) is written:
            del self._pending[key]
        if written.cancelled():
            return
        exc = written.exception()
        # A StoreUnavailableError was logged by the store with its cause.
        if exc is not None and not isinstance(exc, StoreUnavailableError):
            log.error("failed to store a transcript turn", exc_info=exc, extra={"session": key})

    async def settled(self, key: str) -> None:
        """Wait until the last run's turn on ``key`` is written (or has failed to be)."""
        pending = self._pending.get(key)
        if pending is not None:
            await asyncio.wait((pending,))

    async def drain(self) -> None:
        """Wait for every pending transcript write (shutdown calls this before closing stores)."""
        while self._writes:
            await asyncio.wait(list(self._writes))


_PHASES = {"done": "end", "error": "error", "aborted": "aborted"}


def _tool_calls(calls: dict[int, list[str]]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(c[0] or f"call_{i}", c[1], c[2] or "{}") for i, c in sorted(calls.items())
    )
