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
import itertools
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Sequence,
)
from dataclasses import dataclass, field, replace
from typing import TypeVar

from openclaw.agents.admission import Admission, SessionLocks
from openclaw.agents.events import EventBus, RunEnded, RunEvent, RunStarted
from openclaw.agents.history import (
    Reconciled,
    apply_budget,
    reconcile,
    starts_turn,
    to_messages,
)
from openclaw.agents.outcome import (
    RunState,
    ToolResultRecord,
    ToolRound,
    TurnOutcome,
    transcript_turn,
)
from openclaw.agents.prompts import BootstrapCache, system_prompt
from openclaw.agents.registry import Agent, AgentRegistry
from openclaw.agents.tool_calls import ClientCallFilter, ServerCalls
from openclaw.aio import reap
from openclaw.config import defaults as d
from openclaw.errors import (
    ConflictError,
    InternalError,
    InvalidRequestError,
    OpenClawError,
    StoreUnavailableError,
    UnsupportedError,
    UpstreamError,
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
from openclaw.sessions.base import Leases, SessionStore, Turn
from openclaw.sessions.keys import Target
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.tools.registry import AgentTools, Toolbox

log = get_logger("runner")

# Records read per run beyond the message budget, to see a history-reset marker in the tail.
HISTORY_SLACK = 8
NO_TOOLS = AgentTools.of(())
LIMIT_NOTE = (
    "[gateway] This run has reached its limit of {n} tool rounds. Answer now, without calling "
    "tools, from what you have."
)
# Writes of aborted and failed runs trail them (nobody waits for their answer), but only this
# far: beyond it new runs wait for the disk, so a burst cannot grow memory without bound.
MAX_PENDING_WRITES = 4096
# How long ``exclusive`` waits for a session's lease held by another process before calling the
# session busy (a lease between two runs is held for a moment only).
EXCLUSIVE_WAIT_SECONDS = 0.5


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
    # Assistant messages a client put after its last user message (a start of the answer, or
    # earlier answers it wants kept): the model is shown them last, and the turn keeps them.
    # Text only: a call there has no result to go with it.
    following: tuple[ChatMessage, ...] = ()

    def __post_init__(self) -> None:
        kept = tuple(
            ChatMessage("assistant", m.text) for m in self.following if m.text and m.role != "tool"
        )
        object.__setattr__(self, "following", kept)

    @property
    def turn(self) -> tuple[ChatMessage, ...]:
        """This turn's messages, as the model is shown them and the transcript keeps them."""
        return (*self.preceding, self.message, *self.following)

    # The model of this run alone (``x-openclaw-model``, checked against the agent's allowed
    # models by the door): it replaces the agent's model and fallbacks.
    model: str | None = None
    parallel_tool_calls: bool | None = None


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
class ActiveRun:
    """A run in progress in this process (what a status page lists)."""

    run_id: str
    session_key: str
    agent_id: str
    started_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything a run decided before calling the model."""

    agent: Agent
    params: RunParams
    started: float
    request: ModelRequest
    refs: tuple[str, ...]  # the primary model, then its fallbacks
    reset_to: list[ChatMessage] | None  # the history recorded as replacing the stored one
    tools: AgentTools  # the server tools offered (none for a model that cannot call tools)
    client_names: frozenset[str]  # the request's own tools: their calls go back to the client
    redact: Callable[[str], str]  # the gateway's secrets out of what the transcript keeps
    fence: int | None = None  # the session's record count when its history was read

    @property
    def target(self) -> Target:
        return self.params.target

    def turn(self, state: RunState) -> Turn:
        params = self.params
        return transcript_turn(
            params.target.key,
            self.agent.id,
            params.target.ephemeral,
            inputs=params.turn,
            state=state,
            run_id=params.run_id,
            started=self.started,
            reset_to=self.reset_to,
            redact=self.redact,
            fence=self.fence,
        )


T = TypeVar("T")
# Where a streaming run's events are awaited, one by one, in order.
Emit = Callable[[object], Awaitable[None]]
STREAM_QUEUE_SIZE = 256
_END = object()


class _DoorFailed(BaseException):
    """The door's ``emit`` failed (its socket closed under it): the run unwinds as when its
    client leaves (aborted, its partial turn kept), not as a failure of the run; ``execute``
    then raises the door's own error.  A BaseException, so that no step takes it for its own."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Out:
    """Where a run's events go: the bus's observers always, the door that started the run
    (``emit``) when it streams."""

    __slots__ = ("_bus", "_emit", "_key", "_run_id", "streams")

    def __init__(self, bus: EventBus, run_id: str, key: str, emit: Emit | None) -> None:
        self._bus, self._run_id, self._key, self._emit = bus, run_id, key, emit
        self.streams = emit is not None

    async def __call__(self, event: RunEvent) -> None:
        self._bus.publish(self._run_id, self._key, event)
        if self._emit is not None:
            try:
                await self._emit(event)
            except Exception as exc:
                raise _DoorFailed(exc) from exc


async def _relay(
    start: Callable[[Emit], Awaitable[object]],
) -> AsyncGenerator[RunEvent | RunResult, None]:
    """What ``start`` emits, run in a task of its own, as an async generator: its failure is
    raised here after what it emitted before; closing the generator cancels the task."""
    queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE_SIZE)

    async def produce() -> None:
        try:
            await start(queue.put)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(_END)

    task = asyncio.create_task(produce())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        await reap(task)


class _DeadlineGuard:
    """``asyncio.timeout_at`` over many awaits at the cost of one timer: a per-delta
    ``timeout_at`` (a Timeout object and a rescheduled timer handle each) was a tenth of a
    stream's CPU.  Past the deadline, the task is cancelled if it is inside ``wait``, else the
    next ``wait`` fails at once; either raises ``TimeoutError``."""

    def __init__(self, deadline: float) -> None:
        self._task = asyncio.current_task()
        self._waiting = False
        self._expired = False
        self._cancelled = False
        self._handle = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    async def wait(self, step: Awaitable[T]) -> T:
        if self._expired:
            if isinstance(step, Coroutine):
                step.close()  # never awaited: closed, not left to warn
            raise TimeoutError()
        self._waiting = True
        try:
            result = await step
        except asyncio.CancelledError:
            if self._consume_cancel():
                raise TimeoutError() from None
            raise
        except BaseException:
            if self._consume_cancel():  # the step swallowed our cancel and failed otherwise
                raise TimeoutError() from None
            raise
        finally:
            self._waiting = False
        if self._consume_cancel():  # the step swallowed our cancel and returned
            raise TimeoutError()
        return result

    def _consume_cancel(self) -> bool:
        """Whether the deadline cancelled the task (taken back once: ``uncancel``), so that the
        task is not left marked cancelling; False when someone else cancels it too."""
        if not self._cancelled or self._task is None:
            return False
        self._cancelled = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self._handle.cancel()


class AgentRunner:
    def __init__(
        self,
        agents: AgentRegistry,
        store: SessionStore,
        providers: ProviderRegistry,
        bus: EventBus,
        toolbox: Toolbox,
        leases: Leases,
        *,
        max_concurrent: int,
        max_queued: int,
        max_rounds: int = d.TOOLS_MAX_ROUNDS,
        max_repeats: int = d.TOOLS_LOOP_MAX_REPEATS,
    ) -> None:
        self.agents = agents
        self.store = store
        self.providers = providers
        self.bus = bus
        self.toolbox = toolbox
        self.max_rounds = max_rounds
        self.max_repeats = max_repeats
        self._locks = SessionLocks()
        self._leases = leases
        self._admission = Admission(max_concurrent, max_queued)
        self._bootstrap = BootstrapCache()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._writes: set[asyncio.Future[None]] = set()
        self._write_room = asyncio.Event()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._runs: dict[str, ActiveRun] = {}

    def active_runs(self) -> list[ActiveRun]:
        """The runs in progress in this process, oldest first (waiting ones included)."""
        return list(self._runs.values())

    def sessions_in_use(self) -> set[str]:
        return self._locks.busy()

    async def run(self, params: RunParams) -> RunResult:
        """The whole run, without deltas (cheaper for backends that can skip streaming)."""
        return await self.execute(params)

    def stream(self, params: RunParams) -> AsyncGenerator[RunEvent | RunResult, None]:
        """Every event of the run as it happens (the start at once, even while the run waits
        for its session or a slot), then the ``RunResult``: ``execute`` in a task of its own,
        its events relayed (at most ``STREAM_QUEUE_SIZE`` ahead of the consumer)."""
        return _relay(lambda emit: self.execute(params, emit))

    async def execute(self, params: RunParams, emit: Emit | None = None) -> RunResult:
        """The run; with ``emit``, every event of it is awaited there as it happens (the start
        at once, even while the run waits for its session or a slot), then the ``RunResult``,
        which is also returned.  Without, the backend may answer in one piece.

        The events go through plain awaits, not a chain of async generators: one generator per
        step (run, call, rounds, answer, model) cost each event a resumption per level, and
        each run as many generators to create and close (measured: 9% of a request's CPU)."""
        target = params.target
        agent = self.agents.get(target.agent_id)
        started = RunStarted(agent.id)
        self.bus.publish(params.run_id, target.key, started)
        self._runs[params.run_id] = ActiveRun(params.run_id, target.key, agent.id, time.time())
        out = _Out(self.bus, params.run_id, target.key, emit)
        try:
            if emit is not None:
                await emit(started)
            calling = False
            try:
                async with self._slot(target):
                    prepared = await self._prepare(agent, params)
                    calling = True
                    result = await self._call(prepared, out)
            except Exception as exc:
                if calling:
                    raise  # the run's own steps said how it ended
                # Refused before the model was called (busy, a model that cannot take the input):
                # the run still ends with an event, after its start.
                error = exc if isinstance(exc, OpenClawError) else InternalError()
                await out(RunEnded("error", "error", None, error))
                if error is exc:
                    raise
                raise error from exc
            if emit is not None:
                await emit(result)
            return result
        except _DoorFailed as failed:
            raise failed.error from None
        finally:
            self._runs.pop(params.run_id, None)

    async def wait_idle(self) -> None:
        """Until no run is in progress (shutdown lets runs on any door finish)."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def exclusive(
        self, key: str, *, wait: float = EXCLUSIVE_WAIT_SECONDS
    ) -> AsyncIterator[None]:
        """``key``'s session to oneself, for a change no run may interleave with (deleting
        it): no run on it starts here or in another process (its lease) while the block runs.
        ConflictError when a run on it is in progress (here, or holding the lease elsewhere
        for longer than ``wait`` seconds)."""
        busy = ConflictError(
            f"Session `{key}` has a run in progress; stop it first.",
            param="sessionKey",
            code="session_busy",
        )
        if key in self._locks.busy():
            raise busy
        async with self._locks.hold(key):
            await self.settled(key)
            try:
                async with asyncio.timeout(wait):
                    await self._leases.acquire(key)
            except TimeoutError:
                raise busy from None
            try:
                yield
            finally:
                self._leases.release(key)

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
                    # Then the session across processes: after this process's last turn on it
                    # is written (its lease lasts until then), before a run slot.
                    await self.settled(target.key)
                    await self._leases.acquire(target.key)
                    try:
                        await self._admission.acquire()
                        try:
                            yield
                        finally:
                            self._admission.release()
                    finally:
                        self._release_lease(target.key)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    # --- prepare ---------------------------------------------------------------------------

    async def _prepare(self, agent: Agent, params: RunParams) -> Prepared:
        started = time.time()
        merged, fence = await self._history(agent, params)
        history = apply_budget(
            merged.history,
            max_messages=agent.max_history_messages,
            max_tokens=agent.max_history_tokens,
            then=params.turn,
        )
        bootstrap = self._bootstrap.fresh(agent.workspace)
        if bootstrap is None:
            bootstrap = await self._bootstrap.get(agent.workspace, agent.bootstrap_max_chars)
        system = system_prompt(agent.system_prompt, bootstrap, params.extra_system_prompt)
        messages: list[ChatMessage] = []
        if system:
            messages.append(ChatMessage(role="system", content=system))
        messages += [*history, *params.turn]
        refs = (params.model,) if params.model else (agent.model.primary, *agent.model.fallbacks)
        server = self._server_tools(agent, refs[0], params)
        request = ModelRequest(
            model="",
            messages=messages,
            sampling=params.sampling,
            tools=(*server.definitions, *params.tools),
            tool_choice=params.tool_choice,
            parallel_tool_calls=params.parallel_tool_calls,
        )
        client_names = frozenset(t.name for t in params.tools)
        reset_to = history if merged.diverged else None
        return Prepared(
            agent,
            params,
            started,
            request,
            refs,
            reset_to,
            server,
            client_names,
            self.toolbox.redactor,
            fence,
        )

    async def _history(self, agent: Agent, params: RunParams) -> tuple[Reconciled, int | None]:
        """The stored transcript, reconciled with the client's history if it sent one; and the
        session's record count as read (the turn's fence, where the store counts records)."""
        stored: list[ChatMessage] = []
        fence = None
        target = params.target
        if not target.ephemeral:
            # The previous turn of this session (an aborted or failed one) may still be being
            # written; its failure is not this run's.
            await self.settled(target.key)
            entry, records = await self._whole_turns(target.key, agent)
            stored, fence = to_messages(records), entry.records
        if params.history is None:
            return Reconciled(stored, False), fence
        return reconcile(stored, list(params.history), params.turn), fence

    async def _whole_turns(
        self, key: str, agent: Agent
    ) -> tuple[SessionEntry, list[TranscriptRecord]]:
        """The session and its transcript's last records, from the start of a turn: a window
        that begins inside one (its tool rounds, results without their calls) loses that part; a
        window inside a single turn is read again, longer."""
        want = agent.max_history_messages + HISTORY_SLACK
        while True:
            entry, records = await self.store.load(key, agent.id, max_records=want)
            start = next((i for i, r in enumerate(records) if starts_turn(r)), None)
            if start is not None:
                return entry, records[start:]
            if len(records) < want:
                return entry, []  # the whole transcript, and no turn in it
            want *= 4

    def _server_tools(self, agent: Agent, ref: str, params: RunParams) -> AgentTools:
        """The agent's tools when its model can call tools; refuse what the model cannot take
        (images, client tools) and client tools named like server tools, before calling it."""
        provider, model, _ = self.providers.resolve(ref)
        if params.message.has_images and not provider.supports_images(model):
            raise UnsupportedError(
                f"The model `{ref}` of agent `{agent.id}` cannot take images.", param="messages"
            )
        can_call = provider.supports_tools(model)
        if params.tools and not can_call:
            raise UnsupportedError(
                f"The model `{ref}` of agent `{agent.id}` cannot call client tools.", param="tools"
            )
        server = self.toolbox.for_agent(agent.id) if can_call else NO_TOOLS
        clash = sorted(t.name for t in params.tools if t.name in server)
        if clash:
            raise InvalidRequestError(
                f"The request's tools {', '.join(f'`{n}`' for n in clash)} have the names of "
                f"server tools of agent `{agent.id}`; rename them.",
                param="tools",
            )
        return server

    # --- call model, outcome, persist --------------------------------------------------------

    async def _call(self, prepared: Prepared, out: _Out) -> RunResult:
        agent, target, run_id = prepared.agent, prepared.target, prepared.params.run_id
        state = RunState(TurnOutcome(prepared.refs[0]))
        try:
            await self._rounds(prepared, state, out)
            state.current.status = "done"
        except OpenClawError as exc:
            state.current.fail(exc)
            await out(self._ended(state))
            raise
        except Exception as exc:
            # A bug or an upstream oddity, not the client leaving: recorded as an error.
            error = InternalError()
            state.current.fail(error)
            log.exception("run failed", extra={"run_id": run_id})
            await out(self._ended(state))
            raise error from exc
        finally:
            if state.current.status != "done":
                # Nobody waits for a failed or abandoned run's answer: its turn is stored in
                # the background, and the next run on the key waits for it (``_pending``).
                self._persist_in_background(prepared.turn(state))
                if state.current.status == "running":  # cancelled: the client left
                    state.current.status = "aborted"
                    self.bus.publish(run_id, target.key, self._ended(state))
        # Durable before answered: the result (and with it the reply's final bytes on every
        # door) goes out only once the turn is committed, so a client that was answered never
        # finds the turn missing after a crash.  Deltas have already gone out as they came.
        try:
            await self._commit(prepared.turn(state))
        except OpenClawError as exc:
            state.current.fail(exc)
            await out(self._ended(state))
            raise
        except asyncio.CancelledError:
            # The client left during the wait: its turn is kept as done (the write goes on,
            # shielded), and the run ends normally for the observers.
            self.bus.publish(run_id, target.key, self._ended(state))
            raise
        await out(self._ended(state))
        final = state.current
        client_calls = tuple(c for c in final.tool_calls.calls() if c.name in prepared.client_names)
        usage = state.usage
        assert usage is not None
        return RunResult(
            run_id, target.key, agent.id, state.text, usage, final.finish, final.ref, client_calls
        )

    async def _rounds(self, prepared: Prepared, state: RunState, out: _Out) -> None:
        """Model calls until an answer calls no server tool (or the round limit is reached):
        each answer's server calls run, their results go back to the model."""
        agent = prepared.agent
        deadline = asyncio.get_running_loop().time() + agent.timeout_seconds
        calls: ServerCalls | None = None  # made at the first server call: most runs have none
        request = prepared.request
        for number in itertools.count():
            last = number >= self.max_rounds
            if last:
                # One last call, told to answer without tools.
                note = ChatMessage("user", LIMIT_NOTE.format(n=self.max_rounds))
                request = replace(request, messages=[*request.messages, note], tool_choice="none")
            outcome = state.current
            await self._answer(prepared, request, state, out, deadline)
            answer = outcome.tool_calls.calls()
            server = [c for c in answer if c.name not in prepared.client_names]
            if not server:
                return
            if last:
                self._past_the_limit(state, server, only_server=len(server) == len(answer))
                return
            if calls is None:
                calls = ServerCalls(
                    self.toolbox,
                    prepared.tools,
                    self.toolbox.context(agent, prepared.target),
                    max_repeats=self.max_repeats,
                )
            results: list[ToolResultRecord] = []
            await self._run_tools(calls, server, deadline, results, agent, out)
            if len(server) < len(answer):
                # Client calls too: the run ends with them, after the server calls ran.
                state.final_results = results
                return
            outcome.status = "done"
            state.rounds.append(ToolRound(outcome, results))
            state.current = TurnOutcome(prepared.refs[0])
            reply = ChatMessage("assistant", outcome.text, tool_calls=answer)
            fed = [
                ChatMessage("tool", r.text, name=r.call.name, tool_call_id=r.call.id)
                for r in results
            ]
            request = replace(request, messages=[*request.messages, reply, *fed])

    async def _answer(
        self,
        prepared: Prepared,
        request: ModelRequest,
        state: RunState,
        out: _Out,
        deadline: float,
    ) -> None:
        """One model call into ``state.current``; when the run streams, its deltas out: its
        text (after a blank line when an earlier round said something, in the stream as in the
        reply) and the client's tool calls."""
        outcome = state.current
        on_delta: Emit | None = None
        if out.streams:
            earlier_text = any(r.outcome.text for r in state.rounds)
            shown = ClientCallFilter(prepared.client_names)

            async def on_delta(delta: object) -> None:
                nonlocal earlier_text
                if isinstance(delta, TextDelta):
                    if earlier_text:
                        earlier_text = False
                        await out(TextDelta("\n\n"))
                    await out(delta)
                elif isinstance(delta, ToolCallDelta) and (mine := shown(delta)) is not None:
                    await out(mine)

        await self._call_model(prepared, request, outcome, on_delta, deadline)
        if outcome.usage is None:
            provider, model, _ = self.providers.resolve(outcome.ref)
            outcome.usage = await provider.count_tokens(model, request.messages, outcome.text)

    def _past_the_limit(
        self, state: RunState, server: list[ToolCall], *, only_server: bool
    ) -> None:
        """Told to answer without tools, the model called some anyway: they do not run, and are
        answered (in the transcript) with an error result, so every call keeps its result.  The
        client's calls still go back to it; without any, the reply is what the model said (a
        ``tool_calls`` finish would promise calls), and nothing said at all is an error."""
        refusal = f"Not run: this run reached its limit of {self.max_rounds} tool rounds."
        state.final_results = [ToolResultRecord(call, refusal, True, 0) for call in server]
        if not only_server:
            return
        state.current.finish = "stop"
        if not state.text:
            raise UpstreamError(
                f"The model still called tools after the limit of {self.max_rounds} tool "
                "rounds (tools.maxRounds) and gave no answer.",
                code="max_rounds",
            )

    async def _run_tools(
        self,
        calls: ServerCalls,
        server: list[ToolCall],
        deadline: float,
        results: list[ToolResultRecord],
        agent: Agent,
        out: _Out,
    ) -> None:
        """Run one answer's server calls concurrently; their events as they start and end, their
        results into ``results`` in the order of the calls.  Cancelled (the client left, the
        deadline passed): every call still running is cancelled (a command's whole process
        group killed)."""
        for call in server:
            await out(calls.started(call))
        tasks = [asyncio.create_task(calls.run(call)) for call in server]
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            # as_completed's own timeout: a deadline around the yields would cancel whatever
            # the consumer awaits between them.
            for next_done in asyncio.as_completed(tasks, timeout=remaining):
                try:
                    done = await next_done
                except TimeoutError:
                    raise UpstreamTimeoutError(
                        f"The run exceeded the agent's timeout of {agent.timeout_seconds} s "
                        "while tools ran."
                    ) from None
                await out(calls.finished(done))
        finally:
            pending = [t for t in tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        results.extend(t.result() for t in tasks)

    async def _call_model(
        self,
        prepared: Prepared,
        request: ModelRequest,
        outcome: TurnOutcome,
        on_delta: Emit | None,
        deadline: float,
    ) -> None:
        """One model call's answer into ``outcome``, under the run's deadline; its deltas to
        ``on_delta`` as they come (without one the backend may answer in one piece)."""
        agent = prepared.agent
        stream = self.providers.stream(list(prepared.refs), request, deltas=on_delta is not None)
        try:
            async with contextlib.aclosing(stream) as events:
                if on_delta is None:
                    # Nothing is handed out mid-run (observers still see the deltas): one
                    # deadline covers the whole call.
                    run_id, key = prepared.params.run_id, prepared.target.key
                    async with asyncio.timeout_at(deadline):
                        async for ref, event in events:
                            outcome.take(ref, event)
                            if isinstance(event, TextDelta | ToolCallDelta):
                                self.bus.publish(run_id, key, event)
                    return
                # The deadline guards each wait on the model, never the consumer's own awaits
                # between deltas (a timeout there would cancel the wrong thing): one timer
                # for the call, which cancels only while the model is awaited.
                guard = _DeadlineGuard(deadline)
                try:
                    while True:
                        try:
                            ref, event = await guard.wait(anext(events))
                        except StopAsyncIteration:
                            return
                        outcome.take(ref, event)
                        if isinstance(event, TextDelta | ToolCallDelta):
                            await on_delta(event)
                finally:
                    guard.close()
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"The run exceeded the agent's timeout of {agent.timeout_seconds} s."
            ) from None

    def _release_lease(self, key: str) -> None:
        """Release ``key``'s lease once its last turn is committed: another process must read
        it.  A background write (a failed or abandoned run) releases it when done; its done
        callback runs before those of this process's next run waiting in ``settled``, which
        was registered later."""
        pending = self._pending.get(key)
        if pending is None or pending.done():
            self._leases.release(key)
        else:
            pending.add_done_callback(lambda _: self._leases.release(key))

    @staticmethod
    def _ended(state: RunState) -> RunEnded:
        outcome, usage = state.current, state.usage
        if outcome.status == "done":
            return RunEnded("end", outcome.stop_reason, usage)
        if outcome.status == "error":
            return RunEnded("error", outcome.stop_reason, usage, outcome.error)
        return RunEnded("aborted", outcome.stop_reason, usage)

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
