"""A Chat Completions request as an agent run: the validated OpenAI request (``openai_schema``)
becomes the run's ``RunParams``, in this door's terms (its headers, its ``model`` forms, its
messages).  Nothing here talks to the runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from openclaw.agents.registry import AgentRegistry
from openclaw.agents.runner import RunParams
from openclaw.config.schema import ChatCompletionsConfig
from openclaw.errors import InvalidRequestError
from openclaw.gateway.files import FileInput, load_files
from openclaw.gateway.images import image_url_of, load_images
from openclaw.gateway.openai_schema import (
    ChatCompletionRequest,
    FilePartIn,
    ImagePartIn,
    MessageIn,
    TextPartIn,
    ToolIn,
)
from openclaw.messages import (
    ChatMessage,
    ContentPart,
    FunctionChoice,
    Role,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from openclaw.providers.base import SamplingParams
from openclaw.sessions.keys import Target, namespace_of

IMAGE_ONLY_TEXT = "User sent image(s) with no text."
MODEL_FORMS = (
    "Use `openclaw`, `openclaw/default`, `openclaw/<agentId>`, `openclaw:<agentId>` or "
    "`agent:<agentId>`."
)
AGENT_HEADER = "x-openclaw-agent-id"
AGENT_ALIAS_HEADER = "x-openclaw-agent"
SESSION_KEY_HEADER = "x-openclaw-session-key"
MODEL_HEADER = "x-openclaw-model"


def header_agent(request: Request) -> str:
    """The agent the headers name (``x-openclaw-agent-id``, or its alias), or ``""``."""
    return (
        request.headers.get(AGENT_HEADER, "").strip()
        or request.headers.get(AGENT_ALIAS_HEADER, "").strip()
    )


def model_override(request: Request, agents: AgentRegistry, agent_id: str) -> str | None:
    """The model ``x-openclaw-model`` picks for this request, if allowed for the agent (400
    naming the allowed ones otherwise); None without the header."""
    name = request.headers.get(MODEL_HEADER, "").strip()
    return agents.get(agent_id).pick_model(name) if name else None


def agent_from_model(model: str) -> str | None:
    """The agent id a ``model`` string names; None for the default agent."""
    name = model.strip()
    if name in ("openclaw", "openclaw/default"):
        return None
    for prefix in ("openclaw/", "openclaw:", "agent:"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    raise InvalidRequestError(
        f"Invalid model `{model}`. {MODEL_FORMS}", param="model", code="model_not_found"
    )


def _target(
    request: Request, req: ChatCompletionRequest, agents: AgentRegistry, caller: str
) -> Target:
    """Which agent runs (header > ``model`` > the default agent) and in which session (the
    session key header, else the OpenAI ``user``, else a new per-request session)."""
    agent_id = header_agent(request) or agent_from_model(req.model)
    raw_key = request.headers.get(SESSION_KEY_HEADER, "").strip()
    try:
        return agents.target(
            agent_id,
            session_key=raw_key or None,
            user=req.user,
            default="ephemeral",
            namespace=namespace_of(caller),
        )
    except ValueError:
        raise InvalidRequestError(
            f"Invalid `{SESSION_KEY_HEADER}` header.", param=SESSION_KEY_HEADER
        ) from None


async def run_params(
    request: Request,
    req: ChatCompletionRequest,
    agents: AgentRegistry,
    cfg: ChatCompletionsConfig,
    caller: str = "",
) -> RunParams:
    """The run ``req`` asks for (``caller``: who asks, whose sessions it reaches); 400 (404
    for an unknown agent) for what cannot be one."""
    if req.n is not None and req.n != 1:
        raise InvalidRequestError("Only `n=1` is supported.", param="n")
    target = _target(request, req, agents, caller)
    split = _split(req.messages)
    return RunParams(
        message=await _active_message(split.active, cfg),
        target=target,
        history=split.history,
        preceding=split.preceding,
        following=split.following,
        extra_system_prompt="\n\n".join(split.system) or None,
        tools=tuple(_tool(t) for t in req.tools or ()),
        tool_choice=_tool_choice(req.tool_choice) if req.tools else None,
        sampling=_sampling(req),
        model=model_override(request, agents, target.agent_id),
        parallel_tool_calls=req.parallel_tool_calls if req.tools else None,
    )


@dataclass(frozen=True, slots=True)
class _Split:
    system: list[str]
    history: list[ChatMessage]  # earlier turns
    preceding: tuple[ChatMessage, ...]  # earlier parts of this turn (parallel tool results)
    active: MessageIn  # the turn's last user or tool message
    following: tuple[ChatMessage, ...]  # assistant messages after it


def _split(messages: list[MessageIn]) -> _Split:
    """System text; then earlier turns; then this turn: the last user (or tool) message, with
    the tool results answering the same assistant message before it, so the turn is stored
    whole."""
    system = [text for m in messages if m.role in ("system", "developer") if (text := _text_of(m))]
    turns = [m for m in messages if m.role not in ("system", "developer")]
    active = next(
        (i for i in reversed(range(len(turns))) if turns[i].role in ("user", "tool", "function")),
        None,
    )
    if active is None:
        raise InvalidRequestError("Missing user message in `messages`.", param="messages")
    start = active
    if _role(turns[active]) == "tool":
        while start > 0 and _role(turns[start - 1]) == "tool":
            start -= 1
    return _Split(
        system,
        [m for m in map(_past_message, turns[:start]) if m is not None],
        tuple(m for m in map(_past_message, turns[start:active]) if m is not None),
        turns[active],
        tuple(m for m in map(_past_message, turns[active + 1 :]) if m is not None),
    )


def _text_of(msg: MessageIn) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    return "\n".join(p.text for p in msg.content if isinstance(p, TextPartIn))


def _past_message(msg: MessageIn) -> ChatMessage | None:
    """An earlier turn as sent to the model (text only: images go in the active turn alone);
    None for one that carries nothing."""
    text = _text_of(msg)
    if not text and isinstance(msg.content, list):
        text = IMAGE_ONLY_TEXT
    calls = tuple(
        ToolCall(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or ()
    )
    if not (text or calls or msg.role in ("tool", "function")):
        return None
    return ChatMessage(
        role=_role(msg),
        content=text,
        name=msg.name,
        tool_call_id=msg.tool_call_id,
        tool_calls=calls,
    )


def _role(msg: MessageIn) -> Role:
    if msg.role in ("function", "tool"):
        return "tool"
    return "assistant" if msg.role == "assistant" else "user"


async def _active_message(msg: MessageIn, cfg: ChatCompletionsConfig) -> ChatMessage:
    role = _role(msg)
    if role == "user" and not msg.content:
        raise InvalidRequestError("The last user message has no content.", param="messages")
    if msg.content is None or isinstance(msg.content, str):
        return ChatMessage(role=role, content=msg.content or "", tool_call_id=msg.tool_call_id)
    urls = [image_url_of(p) for p in msg.content if isinstance(p, ImagePartIn)]
    files = [p.file for p in msg.content if isinstance(p, FilePartIn)]
    texts = [p.text for p in msg.content if isinstance(p, TextPartIn)]
    if not urls and not files:
        return ChatMessage(role=role, content="\n".join(texts), tool_call_id=msg.tool_call_id)
    if role != "user":
        raise InvalidRequestError(
            "Images and files are accepted only in user messages.", param="messages"
        )
    images = await load_images(urls, cfg)
    documents = await load_files(
        [FileInput(f.file_data, None, f.filename, f.file_id) for f in files],
        cfg,
        "messages",
        "chatCompletions",
    )
    text = "\n".join(t for t in texts if t) or (IMAGE_ONLY_TEXT if not documents else "")
    parts: tuple[ContentPart, ...] = (
        *((TextPart(text),) if text else ()),
        *documents,
        *images,
    )
    return ChatMessage(role="user", content=parts)


def _tool(tool: ToolIn) -> ToolDefinition:
    fn = tool.function
    strict = fn.strict if isinstance(fn.strict, bool) else None
    wire = tool.model_dump(exclude_unset=True)
    return ToolDefinition(fn.name, fn.description, fn.parameters, strict, wire=wire)


def _tool_choice(raw: str | dict[str, Any] | None) -> ToolChoice | None:
    if raw is None or isinstance(raw, str):
        return raw
    fn = raw.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if raw.get("type") == "function":
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                '`tool_choice` of type "function" needs `function.name`.', param="tool_choice"
            )
        return FunctionChoice(name)
    return raw  # another kind of choice: passed on as sent


def _sampling(req: ChatCompletionRequest) -> SamplingParams:
    max_tokens = req.max_tokens
    if req.max_completion_tokens is not None:
        # Both given: the smaller one holds.
        max_tokens = min(max_tokens or req.max_completion_tokens, req.max_completion_tokens)
    return SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=max_tokens,
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        response_format=req.response_format,
    )
