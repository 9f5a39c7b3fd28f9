"""A Responses API request as an agent run: the validated request (``responses_schema``) becomes
the run's ``RunParams``, in this door's terms.  Nothing here talks to the runner or the store.

Items map onto chat turns: ``system``/``developer`` messages (after ``instructions``) become the
run's extra system prompt; user and assistant messages their turns; ``function_call`` items the
assistant's tool calls, ``function_call_output`` items the tool results.  The last user message
(or the results that end the input) is the turn; images and files are read in it only.  With
``previous_response_id`` every input item is new: the stored session is the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from openclaw.agents.runner import RunParams
from openclaw.config.schema import ResponsesConfig
from openclaw.errors import InvalidRequestError, UnsupportedError
from openclaw.gateway.files import FileInput, load_files
from openclaw.gateway.http.chat_request import SESSION_KEY_HEADER, agent_from_model, header_agent
from openclaw.gateway.images import load_images
from openclaw.gateway.responses_schema import (
    CreateResponse,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    Part,
    Refusal,
    TextFormat,
)
from openclaw.ids import hex_id
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

API = "openresponses"  # session keys: agent:<id>:openresponses[-user]:<...>
FILE_ONLY_TEXT = "User sent file(s) with no text."
IMAGE_ONLY_TEXT = "User sent image(s) with no text."
SETTING = "responses"


def agent_id_of(request: Request, model: str) -> str | None:
    """The agent asked for: the agent header (or its alias) > ``model`` > None (the default)."""
    return header_agent(request) or agent_from_model(model)


def target_of(
    request: Request, req: CreateResponse, agent_id: str, agents: Any, caller: str
) -> Target:
    """The session of a run that continues no stored response: the session key header, else
    the ``user``'s stable key, else a new per-request session (within the caller's own space
    of sessions, when it has one)."""
    raw_key = request.headers.get(SESSION_KEY_HEADER, "").strip()
    try:
        target: Target = agents.target(
            agent_id,
            session_key=raw_key or None,
            user=req.user,
            default="ephemeral",
            api=API,
            namespace=namespace_of(caller),
        )
    except ValueError:
        raise InvalidRequestError(
            f"Invalid `{SESSION_KEY_HEADER}` header.", param=SESSION_KEY_HEADER
        ) from None
    return target


def continued_target(agent_id: str, session_key: str, caller: str) -> Target:
    """The session a stored response continues.  Not one made for this run, whatever its
    kind: its transcript is the history (its rows stay where its first run put them)."""
    return Target(agent_id, session_key, False, namespace_of(caller))


@dataclass(frozen=True, slots=True)
class _Turns:
    system: list[str]
    history: list[ChatMessage]
    preceding: list[ChatMessage]
    active: MessageItem | FunctionCallOutputItem
    items: list[dict[str, Any]] = field(default_factory=list)
    following: list[ChatMessage] = field(default_factory=list)


async def run_params(
    req: CreateResponse,
    target: Target,
    cfg: ResponsesConfig,
    *,
    continues: bool,
    model: str | None = None,
) -> tuple[RunParams, list[dict[str, Any]]]:
    """The run ``req`` asks for, and its input items as the API lists them (with ids); 400 for
    what cannot be one."""
    if req.background:
        raise UnsupportedError("Background responses are not supported.", param="background")
    if req.conversation is not None:
        raise UnsupportedError(
            "The Conversations API is not supported; use `previous_response_id`.",
            param="conversation",
        )
    turns = _turns(req)
    message = await _active_message(turns.active, cfg)
    system = "\n\n".join([*([req.instructions] if req.instructions else []), *turns.system])
    tools = tuple(_tool(t, i) for i, t in enumerate(req.tools or ()))
    params = RunParams(
        message=message,
        target=target,
        # Continuing a stored response: its session is the history, every item is this turn's.
        history=None if continues else turns.history,
        preceding=tuple(turns.history + turns.preceding if continues else turns.preceding),
        following=tuple(turns.following),
        extra_system_prompt=system or None,
        tools=tools,
        tool_choice=_tool_choice(req.tool_choice) if tools else None,
        sampling=_sampling(req),
        model=model,
        parallel_tool_calls=req.parallel_tool_calls if tools else None,
    )
    return params, turns.items


def _turns(req: CreateResponse) -> _Turns:
    raw = req.input
    if isinstance(raw, str):
        only = MessageItem(role="user", content=raw)
        return _Turns([], [], [], only, [_listed(only)])
    system: list[str] = []
    messages: list[tuple[ChatMessage, MessageItem | FunctionCallOutputItem | None]] = []
    listed: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, MessageItem):
            listed.append(_listed(item))
            if item.role in ("system", "developer"):
                if text := _text(item.content):
                    system.append(text)
                continue
            role: Role = "user" if item.role == "user" else "assistant"
            messages.append((ChatMessage(role, _text(item.content) or _placeholder(item)), item))
        elif isinstance(item, FunctionCallItem):
            listed.append(_listed(item))
            call = ToolCall(item.call_id, item.name, item.arguments)
            last = messages[-1][0] if messages else None
            if last is not None and last.role == "assistant":
                merged = ChatMessage("assistant", last.content, tool_calls=(*last.tool_calls, call))
                messages[-1] = (merged, None)
            else:
                messages.append((ChatMessage("assistant", "", tool_calls=(call,)), None))
        elif isinstance(item, FunctionCallOutputItem):
            listed.append(_listed(item))
            output = _text(item.output)
            messages.append((ChatMessage("tool", output, tool_call_id=item.call_id), item))
    active = next(
        (i for i in reversed(range(len(messages))) if messages[i][0].role in ("user", "tool")),
        None,
    )
    if active is None:
        raise InvalidRequestError(
            "`input` needs a user message or a function_call_output.", param="input"
        )
    start = active
    if messages[active][0].role == "tool":
        while start > 0 and messages[start - 1][0].role == "tool":
            start -= 1
    turn = messages[active][1]
    assert turn is not None  # user messages and tool results keep their item
    return _Turns(
        system,
        [m for m, _ in messages[:start]],
        [m for m, _ in messages[start:active]],
        turn,
        listed,
        [m for m, _ in messages[active + 1 :]],
    )


def _text(content: str | list[Part]) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, InputText | OutputText):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
    return "\n".join(t for t in texts if t)


def _placeholder(item: MessageItem) -> str:
    """An earlier message with only images or files: what the model is told of it."""
    parts = item.content if isinstance(item.content, list) else []
    if any(isinstance(p, InputFile) for p in parts):
        return FILE_ONLY_TEXT
    return IMAGE_ONLY_TEXT if parts else ""


async def _active_message(
    item: MessageItem | FunctionCallOutputItem, cfg: ResponsesConfig
) -> ChatMessage:
    if isinstance(item, FunctionCallOutputItem):
        return ChatMessage("tool", _text(item.output), tool_call_id=item.call_id)
    if isinstance(item.content, str):
        if not item.content:
            raise InvalidRequestError("The last user message has no content.", param="input")
        return ChatMessage("user", item.content)
    images = [p for p in item.content if isinstance(p, InputImage)]
    files = [p for p in item.content if isinstance(p, InputFile)]
    text = _text(item.content)
    if not images and not files:
        if not text:
            raise InvalidRequestError("The last user message has no content.", param="input")
        return ChatMessage("user", text)
    for image in images:
        if image.image_url is None:
            raise InvalidRequestError(
                "`file_id` images are not supported here (there is no Files API); send "
                "`image_url` (a data: URI or a URL).",
                param="input",
            )
    loaded = await load_images([p.image_url for p in images if p.image_url], cfg, "input", SETTING)
    file_parts = await load_files(
        [FileInput(p.file_data, p.file_url, p.filename, p.file_id) for p in files],
        cfg,
        "input",
        SETTING,
    )
    lead = text or (IMAGE_ONLY_TEXT if not file_parts else "")
    parts: tuple[ContentPart, ...] = (
        *((TextPart(lead),) if lead else ()),
        *file_parts,
        *loaded,
    )
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return ChatMessage("user", parts[0].text)
    return ChatMessage("user", parts)


def _listed(item: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> dict[str, Any]:
    """An input item as ``GET /v1/responses/{id}/input_items`` shows it: typed, with an id."""
    data = item.model_dump(exclude_none=True, by_alias=True)
    data["type"] = item.type
    if isinstance(item, MessageItem):
        data["id"] = item.id or "msg_" + hex_id(24)
        if item.role == "assistant":
            # As an output message: output_text parts, each with its annotations.
            texts = [item.content] if isinstance(item.content, str) else None
            if texts is not None:
                data["content"] = [{"type": "output_text", "text": t} for t in texts]
            for part in data["content"]:
                if part.get("type") == "output_text":
                    part.setdefault("annotations", [])
                    part.setdefault("logprobs", [])
        elif isinstance(item.content, str):
            data["content"] = [{"type": "input_text", "text": item.content}]
        data.setdefault("status", "completed")
    elif isinstance(item, FunctionCallItem):
        data["id"] = item.id or "fc_" + hex_id(24)
        data.setdefault("status", "completed")
    else:
        data["id"] = item.id or "fco_" + hex_id(24)
        data.setdefault("status", "completed")
    return data


def _tool(raw: dict[str, Any], index: int) -> ToolDefinition:
    if raw.get("type") != "function":
        raise UnsupportedError(
            f"Only function tools are supported, not `{raw.get('type')}`.",
            param=f"tools[{index}].type",
        )
    try:
        tool = FunctionTool.model_validate(raw)
    except ValueError as exc:
        raise InvalidRequestError(
            f"Invalid function tool in `tools[{index}]`: {exc.errors()[0]['msg']}.",  # type: ignore[attr-defined]
            param=f"tools[{index}]",
        ) from None
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    # The chat-completions shape an OpenAI-compatible upstream is sent, built once here.
    wire = {"type": "function", "function": function}
    return ToolDefinition(tool.name, tool.description, tool.parameters, tool.strict, wire=wire)


def _tool_choice(raw: str | dict[str, Any] | None) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise InvalidRequestError(
                "`tool_choice` must be `auto`, `none`, `required` or a function.",
                param="tool_choice",
            )
        return raw
    name = raw.get("name")
    if raw.get("type") == "function" and isinstance(name, str) and name:
        return FunctionChoice(name)
    raise UnsupportedError(
        "`tool_choice` must be `auto`, `none`, `required` or `{type: function, name}`.",
        param="tool_choice",
    )


def _sampling(req: CreateResponse) -> SamplingParams:
    return SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_output_tokens,
        response_format=_response_format(req.text.format if req.text else None),
    )


def _response_format(fmt: TextFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise InvalidRequestError(
            "`text.format` of type `json_schema` needs a `schema`.", param="text.format.schema"
        )
    schema: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    if fmt.description is not None:
        schema["description"] = fmt.description
    return {"type": "json_schema", "json_schema": schema}
