"""The OpenAI Chat Completions request, as validated wire models (one copy of each type).

Unknown fields are allowed (OpenAI-compatible servers ignore what they do not support) and
logged at debug level by the endpoint.  Numbers are strict: ``"1"`` is not a temperature.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from openclaw.errors import InvalidRequestError
from openclaw.gateway.body import check_integers

Number = Annotated[float, Field(strict=True)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
# Token counts a model could take, and a seed a 64-bit field can carry (beyond, a 400).
TokenCount = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
Seed = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TextPartIn(_Wire):
    type: Literal["text", "input_text"]
    text: StrictStr


class ImageUrl(_Wire):
    url: StrictStr
    detail: StrictStr | None = None


class ImagePartIn(_Wire):
    type: Literal["image_url"]
    image_url: ImageUrl | StrictStr


class FileIn(_Wire):
    file_data: StrictStr | None = None
    file_id: StrictStr | None = None
    filename: StrictStr | None = None


class FilePartIn(_Wire):
    type: Literal["file"]
    file: FileIn


ContentPartIn = Annotated[TextPartIn | ImagePartIn | FilePartIn, Field(discriminator="type")]


class FunctionCallIn(_Wire):
    name: StrictStr
    arguments: StrictStr


class ToolCallIn(_Wire):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPartIn] | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None


class FunctionDefIn(_Wire):
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: Any = None  # passed on as sent; only a boolean is understood here


class ToolIn(_Wire):
    type: Literal["function"]
    function: FunctionDefIn


class StreamOptions(_Wire):
    include_usage: StrictBool = False


class ChatCompletionRequest(_Wire):
    model: StrictStr
    messages: Annotated[list[MessageIn], Field(min_length=1)]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    n: StrictInt | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    stop: StrictStr | Annotated[list[NonEmpty], Field(max_length=4)] | None = None
    seed: Seed | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    response_format: dict[str, Any] | None = None
    user: StrictStr | None = None
    tools: list[ToolIn] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None


_RANGES = {
    "temperature": "between 0 and 2",
    "top_p": "between 0 and 1",
    "presence_penalty": "between -2 and 2",
    "frequency_penalty": "between -2 and 2",
}
_KINDS = {
    "temperature": "a number",
    "top_p": "a number",
    "presence_penalty": "a number",
    "frequency_penalty": "a number",
    "seed": "a 64-bit integer",
    "n": "an integer",
    "max_tokens": "an integer from 1 to 2147483647",
    "max_completion_tokens": "an integer from 1 to 2147483647",
    "stream": "a boolean",
    "model": "a string",
    "user": "a string",
    "stop": "a string or an array of at most 4 strings",
    "messages": "a non-empty array",
    "stream_options": "an object",
    "response_format": "an object",
}


_BRANCHES = frozenset({"str", "list[str]", "list[...]", "ImageUrl", "function-after"})


_PART_TAGS = frozenset({"text", "input_text", "image_url", "file"})


def _fields(loc: tuple[int | str, ...]) -> list[int | str]:
    """The location as the client's field path: pydantic also names union branches and the tag
    of a tagged union in it, which the client never wrote."""
    out: list[int | str] = []
    after_index = False
    for part in loc:
        if isinstance(part, str) and (part in _BRANCHES or "[" in part):
            continue
        if after_index and part in _PART_TAGS and "content" in out:
            after_index = False
            continue
        after_index = isinstance(part, int)
        out.append(part)
    return out


def _param(fields: list[int | str]) -> str:
    out = ""
    for part in fields:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def request_error(exc: ValidationError) -> InvalidRequestError:
    """The first problem as an OpenAI-style 400 naming the field in ``param``."""
    # With unions pydantic reports every branch; the deepest error, not on the plain-string
    # branch, is the one that says what is actually wrong.
    err = max(exc.errors(), key=lambda e: (len(e["loc"]), "str" not in e["loc"]))
    kind = err["type"]
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
    if kind in ("model_type", "model_attributes_type") and not err["loc"]:
        return InvalidRequestError("The request body must be a JSON object.")
    loc = tuple(_fields(tuple(err["loc"])))
    top = str(loc[0]) if loc else ""
    param = _param(list(loc))
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if (
        top in _RANGES
        and len(loc) == 1
        and kind
        in (
            "greater_than_equal",
            "less_than_equal",
        )
    ):
        return InvalidRequestError(f"`{top}` must be {_RANGES[top]}.", param=top)
    if top == "stop":
        return InvalidRequestError(
            "`stop` must be a string or an array of at most 4 non-empty strings.", param="stop"
        )
    if top == "messages" and len(loc) >= 3 and loc[2] == "role":
        return InvalidRequestError(
            f"Invalid value for '{param}': expected one of 'system', 'developer', 'user', "
            "'assistant', 'tool'.",
            param=param,
        )
    if top == "messages" and "content" in loc and len(loc) <= 4:
        if kind == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            return InvalidRequestError(
                f"Invalid content part type `{tag}` in `{param}`; expected `text`, "
                "`input_text`, `image_url` or `file`.",
                param=param,
            )
        return InvalidRequestError(
            f"Invalid content in `{param}`: expected a string or an array of content parts.",
            param=param,
        )
    if len(loc) == 1 and top in _KINDS:
        return InvalidRequestError(f"`{top}` must be {_KINDS[top]}.", param=top)
    return InvalidRequestError(f"Invalid value for `{param}`: {err['msg']}.", param=param or None)


def parse_request(body: bytes) -> ChatCompletionRequest:
    try:
        req = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise request_error(exc) from None
    check_integers(body, req)
    return req
