"""The one agent run every door shares (HTTP, WebSocket, CLI):

    prepare     the agent's history (transcript, reconciled with what the client sent, within the
                budget), system prompt and the model request; what the model cannot take is
                refused before any call
    call model  stream the model's answer under the run's deadline, into a ``TurnOutcome``
    outcome     done, error, or aborted (the client left: the upstream call is closed at once)
    persist     the turn is committed before the result goes out (durable before answered);
                a failed or abandoned run is stored in the background, marked as such

Runs on one session are serialised in arrival order; runs on different sessions run in parallel.
Every step's events go to the door that started the run, in order, and to the bus's observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field

from openclaw.agents.admission import Admission, SessionLocks
from openclaw.agents.events import EventBus, RunEnded, RunEvent, RunStarted
from openclaw.agents.history import Reconciled, apply_budget, reconcile, to_messages
from openclaw.agents.outcome import TurnOutcome, transcript_turn
from openclaw.agents.prompts import BootstrapCache, system_prompt
from openclaw.agents.registry import Agent, AgentRegistry
from openclaw.errors import (
    InternalError,
    OpenClawError,
    StoreUnavailableError,
    UnsupportedError,
    UpstreamTimeoutError,
)
from openclaw.ids import hex_id
from openclaw.logs import get_logger
from openclaw.messages import (
    ChatMessage,
    StopReason,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
)
from openclaw.providers.base import ModelRequest, SamplingParams
from openclaw.providers.registry import ProviderRegistry
from openclaw.sessions.base import SessionStore, Turn
from openclaw.sessions.keys import Target

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
    clients do not (the WebSocket, the CLI), where the transcript alone is the history."""

    message: ChatMessage
    target: Target
    history: Sequence[ChatMessage] | None = None
    extra_system_prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    run_id: str = field(default_factory=new_run_id)
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice | None = None
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


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything a run decided before calling the model."""

    agent: Agent
    params: RunParams
    started: float
    request: ModelRequest
    refs: tuple[str, ...]  # the primary model, then its fallbacks
    reset_to: list[ChatMessage] | None  # the history recorded as replacing the stored one

    @property
    def target(self) -> Target:
        return self.params.target

    def turn(self, outcome: TurnOutcome) -> Turn:
        params = self.params
        return transcript_turn(
            params.target.key,
            self.agent.id,
            params.target.ephemeral,
            inputs=(*params.preceding, params.message),
            outcome=outcome,
            run_id=params.run_id,
            started=self.started,
            reset_to=self.reset_to,
        )


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
        self._locks = SessionLocks()
        self._admission = Admission(max_concurrent, max_queued)
        self._bootstrap = BootstrapCache()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._writes: set[asyncio.Future[None]] = set()
        self._write_room = asyncio.Event()
        self._pending: dict[str, asyncio.Future[None]] = {}

    def sessions_in_use(self) -> set[str]:
        return self._locks.busy()

    async def run(self, params: RunParams) -> RunResult:
        """The whole run, without deltas (cheaper for backends that can skip streaming)."""
        result = None
        agent = self.agents.get(params.target.agent_id)
        async with self._slot(params.target):
            prepared = await self._prepare(agent, params)
            async with contextlib.aclosing(self._call(prepared, False)) as events:
                async for item in events:
                    if isinstance(item, RunResult):
                        result = item
                    elif self.bus.has_listeners():
                        self.bus.publish(params.run_id, params.target.key, item)
        assert result is not None
        return result

    async def stream(self, params: RunParams) -> AsyncGenerator[RunEvent | RunResult, None]:
        """Every event of the run as it happens, then the ``RunResult``."""
        agent = self.agents.get(params.target.agent_id)
        async with self._slot(params.target):
            prepared = await self._prepare(agent, params)
            async with contextlib.aclosing(self._call(prepared, True)) as events:
                async for item in events:
                    if not isinstance(item, RunResult) and self.bus.has_listeners():
                        self.bus.publish(params.run_id, params.target.key, item)
                    yield item

    async def wait_idle(self) -> None:
        """Until no run is in progress (shutdown lets runs on any door finish)."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def _slot(self, target: Target) -> AsyncIterator[None]:
        """Everything a run waits for before it starts, entered once per run (not per event):
        room in the write backlog, then the session's turn, then a run slot."""
        self._active += 1
        self._idle.clear()
        try:
            while len(self._writes) >= MAX_PENDING_WRITES:
                self._write_room.clear()
                await self._write_room.wait()
            if target.ephemeral:
                # A per-request key is new and unique: nothing to serialise against.
                await self._admission.acquire()
                try:
                    yield
                finally:
                    self._admission.release()
            else:
                # The session lock comes first: runs queued behind a busy session must not
                # hold run slots that other sessions could use.
                async with self._locks.hold(target.key):
                    await self._admission.acquire()
                    try:
                        yield
                    finally:
                        self._admission.release()
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    # --- prepare ---------------------------------------------------------------------------

    async def _prepare(self, agent: Agent, params: RunParams) -> Prepared:
        started = time.time()
        merged = await self._history(agent, params)
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
        messages += [*history, *params.preceding, params.message]
        refs = (agent.model.primary, *agent.model.fallbacks)
        self._check_capabilities(agent, refs[0], params)
        request = ModelRequest(
            model="",
            messages=messages,
            sampling=params.sampling,
            tools=params.tools,
            tool_choice=params.tool_choice,
        )
        return Prepared(agent, params, started, request, refs, history if merged.diverged else None)

    async def _history(self, agent: Agent, params: RunParams) -> Reconciled:
        """The stored transcript, reconciled with the client's history if it sent one."""
        stored: list[ChatMessage] = []
        target = params.target
        if not target.ephemeral:
            # The previous turn of this session (an aborted or failed one) may still be being
            # written; its failure is not this run's.
            await self.settled(target.key)
            _, records = await self.store.load(
                target.key, agent.id, max_records=agent.max_history_messages + HISTORY_SLACK
            )
            stored = to_messages(records)
        if params.history is None:
            return Reconciled(stored, False)
        return reconcile(stored, list(params.history), (*params.preceding, params.message))

    def _check_capabilities(self, agent: Agent, ref: str, params: RunParams) -> None:
        """Refuse what the agent's model cannot take, before calling it."""
        if not (params.message.has_images or params.tools):
            return
        provider, model, _ = self.providers.resolve(ref)
        if params.message.has_images and not provider.supports_images(model):
            raise UnsupportedError(
                f"The model `{ref}` of agent `{agent.id}` cannot take images.", param="messages"
            )
        if params.tools and not provider.supports_tools(model):
            raise UnsupportedError(
                f"The model `{ref}` of agent `{agent.id}` cannot call client tools.", param="tools"
            )

    # --- call model, outcome, persist --------------------------------------------------------

    async def _call(
        self, prepared: Prepared, deltas: bool
    ) -> AsyncGenerator[RunEvent | RunResult, None]:
        agent, target, run_id = prepared.agent, prepared.target, prepared.params.run_id
        yield RunStarted(agent.id)
        outcome = TurnOutcome(prepared.refs[0])
        try:
            async for delta in self._call_model(prepared, outcome, deltas):
                yield delta
            if outcome.usage is None:
                provider, model, _ = self.providers.resolve(outcome.ref)
                messages = prepared.request.messages
                outcome.usage = await provider.count_tokens(model, messages, outcome.text)
            outcome.status = "done"
        except OpenClawError as exc:
            outcome.fail(exc)
            yield self._ended(outcome)
            raise
        except Exception as exc:
            # A bug or an upstream oddity, not the client leaving: recorded as an error.
            error = InternalError()
            outcome.fail(error)
            log.exception("run failed", extra={"run_id": run_id})
            yield self._ended(outcome)
            raise error from exc
        finally:
            if outcome.status != "done":
                # Nobody waits for a failed or abandoned run's answer: its turn is stored in
                # the background, and the next run on the key waits for it (``_pending``).
                self._persist_in_background(prepared.turn(outcome))
                if outcome.status == "running":  # cancelled: the client left
                    outcome.status = "aborted"
                    self.bus.publish(run_id, target.key, self._ended(outcome))
        # Durable before answered: the result (and with it the reply's final bytes on every
        # door) goes out only once the turn is committed, so a client that was answered never
        # finds the turn missing after a crash.  Deltas have already gone out as they came.
        try:
            await self._commit(prepared.turn(outcome))
        except OpenClawError as exc:
            outcome.fail(exc)
            yield self._ended(outcome)
            raise
        except asyncio.CancelledError:
            # The client left during the wait: its turn is kept as done (the write goes on,
            # shielded), and the run ends normally for the observers.
            self.bus.publish(run_id, target.key, self._ended(outcome))
            raise
        yield self._ended(outcome)
        assert outcome.usage is not None
        yield RunResult(
            run_id,
            target.key,
            agent.id,
            outcome.text,
            outcome.usage,
            outcome.finish,
            outcome.ref,
            outcome.tool_calls.calls(),
        )

    async def _call_model(
        self, prepared: Prepared, outcome: TurnOutcome, deltas: bool
    ) -> AsyncGenerator[TextDelta | ToolCallDelta, None]:
        """The model's answer into ``outcome``, under the agent's deadline; deltas as they come
        (with ``deltas`` False the backend may answer in one piece)."""
        agent = prepared.agent
        deadline = asyncio.get_running_loop().time() + agent.timeout_seconds
        stream = self.providers.stream(list(prepared.refs), prepared.request, deltas=deltas)
        try:
            async with contextlib.aclosing(stream) as events:
                if not deltas:
                    # Nothing is handed out mid-run (observers still see the deltas): one
                    # deadline covers the whole call.
                    run_id, key = prepared.params.run_id, prepared.target.key
                    async with asyncio.timeout_at(deadline):
                        async for ref, event in events:
                            outcome.take(ref, event)
                            if isinstance(event, TextDelta | ToolCallDelta):
                                self.bus.publish(run_id, key, event)
                    return
                while True:
                    # The deadline guards each wait on the model, never the consumer's own
                    # awaits between deltas (a timeout there would cancel the wrong thing).
                    try:
                        async with asyncio.timeout_at(deadline):
                            ref, event = await anext(events)
                    except StopAsyncIteration:
                        return
                    outcome.take(ref, event)
                    if isinstance(event, TextDelta | ToolCallDelta):
                        yield event
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"The run exceeded the agent's timeout of {agent.timeout_seconds} s."
            ) from None

    @staticmethod
    def _ended(outcome: TurnOutcome) -> RunEnded:
        if outcome.status == "done":
            return RunEnded("end", outcome.stop_reason, outcome.usage)
        if outcome.status == "error":
            return RunEnded("error", outcome.stop_reason, outcome.usage, outcome.error)
        return RunEnded("aborted", outcome.stop_reason, outcome.usage)

    def _queue(self, turn: Turn) -> asyncio.Future[None]:
        """Hand ``turn`` to the store.  The next run on the key waits for the write before
        reading history (``_pending``), readers can wait for it (``settled``), and shutdown
        waits for all writes (``drain``)."""
        written = self.store.record_turn(turn)
        self._writes.add(written)
        written.add_done_callback(lambda f: self._written(turn.key, f))
        if not turn.ephemeral:
            self._pending[turn.key] = written
        return written

    def _persist_in_background(self, turn: Turn) -> None:
        try:
            self._queue(turn)
        except Exception:
            log.exception("failed to store a transcript turn", extra={"session": turn.key})

    async def _commit(self, turn: Turn) -> None:
        """Queue ``turn`` and wait until it is committed.  Cancelling the wait leaves the write
        going (the turn was answered by the model; it is kept)."""
        try:
            written = self._queue(turn)
        except Exception as exc:  # the store is closed (shutdown): the turn cannot be kept
            log.exception("failed to store a transcript turn", extra={"session": turn.key})
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
