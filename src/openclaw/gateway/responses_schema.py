"""The OpenAI Responses API request (``POST /v1/responses``), as validated wire models.

Unknown fields are allowed and ignored (OpenAI's SDKs add fields over time; rejecting them broke
clients of the reference gateway); types are strict.  Items without a ``type`` are messages, as
OpenAI reads them.  Bad values become a 400 naming the field in ``param`` (``request_error``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
)

from openclaw.errors import InvalidRequestError
from openclaw.gateway.body import check_integers

Number = Annotated[float, Field(strict=True)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# --- content parts ------------------------------------------------------------------------------


class InputText(_Wire):
    type: Literal["input_text"]
    text: StrictStr


class OutputText(_Wire):
    type: Literal["output_text"]
    text: StrictStr


class Refusal(_Wire):
    type: Literal["refusal"]
    refusal: StrictStr


class InputImage(_Wire):
    type: Literal["input_image"]
    image_url: StrictStr | None = None
    file_id: StrictStr | None = None
    detail: StrictStr | None = None


class InputFile(_Wire):
    type: Literal["input_file"]
    file_data: StrictStr | None = None
    file_url: StrictStr | None = None
    filename: StrictStr | None = None
    file_id: StrictStr | None = None


Part = Annotated[
    InputText | OutputText | Refusal | InputImage | InputFile, Field(discriminator="type")
]

# --- items --------------------------------------------------------------------------------------


class MessageItem(_Wire):
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[Part]
    id: StrictStr | None = None
    status: StrictStr | None = None


class FunctionCallItem(_Wire):
    type: Literal["function_call"]
    call_id: Annotated[StrictStr, Field(min_length=1)]
    name: Annotated[StrictStr, Field(min_length=1)]
    arguments: StrictStr
    id: StrictStr | None = None
    status: StrictStr | None = None


class FunctionCallOutputItem(_Wire):
    type: Literal["function_call_output"]
    call_id: Annotated[StrictStr, Field(min_length=1)]
    output: StrictStr | list[Part]
    id: StrictStr | None = None
    status: StrictStr | None = None


class IgnoredItem(_Wire):
    """``reasoning`` and ``item_reference`` items: accepted, not used."""

    type: Literal["reasoning", "item_reference"]


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else ""
    return getattr(value, "type", "")


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[IgnoredItem, Tag("reasoning")]
    | Annotated[IgnoredItem, Tag("item_reference")],
    Discriminator(_item_kind),
]

# --- tools, text format -------------------------------------------------------------------------


class FunctionTool(_Wire):
    type: Literal["function"]
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class TextFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None


class TextConfig(_Wire):
    format: TextFormat | None = None


class CreateResponse(_Wire):
    model: StrictStr
    input: StrictStr | list[Item]
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    stream: StrictBool = False
    store: StrictBool = True
    previous_response_id: Annotated[StrictStr, Field(min_length=1)] | None = None
    metadata: dict[str, StrictStr] | None = None
    text: TextConfig | None = None
    user: StrictStr | None = None
    background: StrictBool | None = None
    conversation: Any = None


# --- errors -------------------------------------------------------------------------------------

_KINDS = {
    "model": "a string",
    "input": "a string or an array of input items",
    "instructions": "a string",
    "stream": "a boolean",
    "store": "a boolean",
    "temperature": "a number between 0 and 2",
    "top_p": "a number between 0 and 1",
    "max_output_tokens": "an integer from 1 to 2147483647",
    "previous_response_id": "a string",
    "metadata": "an object of strings",
    "user": "a string",
    "tools": "an array of tools",
    "parallel_tool_calls": "a boolean",
}


_TAGS = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "item_reference",
        "input_text",
        "output_text",
        "refusal",
        "input_image",
        "input_file",
    }
)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    after_index = False
    for part in loc:
        if isinstance(part, str) and (
            "[" in part or part in ("str", "function-after") or (after_index and part in _TAGS)
        ):
            after_index = False
            continue  # pydantic's names for union branches and tags, never in the request
        after_index = isinstance(part, int)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def request_error(exc: ValidationError) -> InvalidRequestError:
    """The deepest problem as an OpenAI-style 400 naming the field in ``param``."""
    err = max(exc.errors(), key=lambda e: (len(e["loc"]), "str" not in e["loc"]))
    kind = err["type"]
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload."
        )
    if kind in ("model_type", "model_attributes_type") and not err["loc"]:
        return InvalidRequestError("The request body must be a JSON object.")
    param = _param(tuple(err["loc"]))
    top = param.split(".")[0].split("[")[0]
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return InvalidRequestError(
            f"Invalid type `{ctx.get('tag')}` in `{param}`; expected one of "
            f"{ctx.get('expected_tags')}.",
            param=param,
            code="invalid_value",
        )
    if param == top and top in _KINDS:
        return InvalidRequestError(f"`{top}` must be {_KINDS[top]}.", param=top)
    return InvalidRequestError(f"Invalid value for `{param}`: {err['msg']}.", param=param or None)


def parse_request(body: bytes) -> CreateResponse:
    try:
        req = CreateResponse.model_validate_json(body)
    except ValidationError as exc:
        raise request_error(exc) from None
    check_integers(body, req)
    return req
